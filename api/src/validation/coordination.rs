//! Lease rules (Kubernetes' `ValidateLeaseSpec`).

use k8s_openapi::api::coordination::v1::Lease;

use super::non_negative;
use crate::error::FieldError;
use crate::path::FieldPath;

pub(super) fn validate_lease(lease: &Lease, errors: &mut Vec<FieldError>) {
    let Some(spec) = &lease.spec else { return };
    let path = FieldPath::new("spec");
    if let Some(duration) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errors.push(FieldError::invalid(
            &path.child("leaseDurationSeconds"),
            duration,
            "must be greater than 0",
        ));
    }
    non_negative(
        spec.lease_transitions.map(i64::from),
        &path.child("leaseTransitions"),
        errors,
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;

    #[test]
    fn durations_are_positive_and_transitions_not_negative() {
        let lease = |duration, transitions| Lease {
            spec: Some(LeaseSpec {
                lease_duration_seconds: duration,
                lease_transitions: transitions,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut errors = Vec::new();
        validate_lease(&lease(Some(15), Some(0)), &mut errors);
        validate_lease(&lease(None, None), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        validate_lease(&lease(Some(0), Some(-1)), &mut errors);
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }
}
