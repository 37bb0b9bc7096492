//! Service and Endpoints rules (Kubernetes' core/v1 service validation).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Endpoints, Service};

use super::{
    immutable, names, one_of, push_invalid, validate_labels, validate_port_number_or_name,
};
use crate::error::FieldError;
use crate::path::FieldPath;

/// Service types Skiff implements (`ExternalName` is not implemented yet).
const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

pub(super) fn validate_service(service: &Service, errors: &mut Vec<FieldError>) {
    let path = FieldPath::new("spec");
    let Some(spec) = &service.spec else {
        errors.push(FieldError::required(&path, ""));
        return;
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    one_of(
        Some(service_type),
        SERVICE_TYPES,
        &path.child("type"),
        errors,
    );
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless {
        push_invalid(
            errors,
            &path.child("clusterIP"),
            cluster_ip,
            names::ip_address(cluster_ip),
        );
    }
    if headless && service_type != "ClusterIP" {
        errors.push(FieldError::invalid(
            &path.child("clusterIP"),
            cluster_ip,
            format!("may not be set to 'None' for {service_type} services"),
        ));
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless {
        errors.push(FieldError::required(&path.child("ports"), ""));
    }
    let mut port_names = HashSet::new();
    let mut port_keys = HashSet::new();
    for (idx, port) in ports.iter().enumerate() {
        let port_path = path.child("ports").index(idx);
        let name = port.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            if ports.len() > 1 {
                errors.push(FieldError::required(&port_path.child("name"), ""));
            }
        } else {
            push_invalid(
                errors,
                &port_path.child("name"),
                name,
                names::dns1123_label(name),
            );
            if !port_names.insert(name) {
                errors.push(FieldError::duplicate(&port_path.child("name"), name));
            }
        }
        for msg in names::port_number(i64::from(port.port)) {
            errors.push(FieldError::invalid(
                &port_path.child("port"),
                port.port,
                msg,
            ));
        }
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        one_of(
            Some(protocol),
            PROTOCOLS,
            &port_path.child("protocol"),
            errors,
        );
        if !port_keys.insert((port.port, protocol)) {
            errors.push(FieldError::duplicate(
                &port_path,
                format!("{}/{protocol}", port.port),
            ));
        }
        if let Some(target) = &port.target_port {
            validate_port_number_or_name(target, &port_path.child("targetPort"), errors);
        }
        if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
            if service_type == "ClusterIP" {
                errors.push(FieldError::forbidden(
                    &port_path.child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
            for msg in names::port_number(i64::from(node_port)) {
                errors.push(FieldError::invalid(
                    &port_path.child("nodePort"),
                    node_port,
                    msg,
                ));
            }
        }
    }
    validate_labels(
        spec.selector.iter().flatten(),
        &path.child("selector"),
        errors,
    );
    one_of(
        spec.session_affinity.as_deref(),
        &["None", "ClientIP"],
        &path.child("sessionAffinity"),
        errors,
    );
    one_of(
        spec.external_traffic_policy.as_deref(),
        &["Cluster", "Local"],
        &path.child("externalTrafficPolicy"),
        errors,
    );
    one_of(
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
        &path.child("internalTrafficPolicy"),
        errors,
    );
    one_of(
        spec.ip_family_policy.as_deref(),
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
        &path.child("ipFamilyPolicy"),
        errors,
    );
    for (idx, family) in spec.ip_families.iter().flatten().enumerate() {
        one_of(
            Some(family),
            &["IPv4", "IPv6"],
            &path.child("ipFamilies").index(idx),
            errors,
        );
    }
}

/// A Service's cluster IP may not change once allocated.
pub(super) fn validate_service_update(old: &Service, new: &Service, errors: &mut Vec<FieldError>) {
    let cluster_ip = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.clone())
            .filter(|ip| !ip.is_empty())
    };
    if let Some(old_ip) = cluster_ip(old) {
        immutable(
            &Some(old_ip),
            &cluster_ip(new),
            &FieldPath::new("spec").child("clusterIP"),
            errors,
        );
    }
}

pub(super) fn validate_endpoints(endpoints: &Endpoints, errors: &mut Vec<FieldError>) {
    for (subset_idx, subset) in endpoints.subsets.iter().flatten().enumerate() {
        let subset_path = FieldPath::new("subsets").index(subset_idx);
        let address_lists = [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ];
        for (field, addresses) in address_lists {
            for (idx, address) in addresses.iter().flatten().enumerate() {
                let ip_path = subset_path.child(field).index(idx).child("ip");
                push_invalid(
                    errors,
                    &ip_path,
                    &address.ip,
                    names::ip_address(&address.ip),
                );
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let mut port_names = HashSet::new();
        for (idx, port) in ports.iter().enumerate() {
            let port_path = subset_path.child("ports").index(idx);
            match port.name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => {
                    push_invalid(
                        errors,
                        &port_path.child("name"),
                        name,
                        names::dns1123_label(name),
                    );
                    if !port_names.insert(name) {
                        errors.push(FieldError::duplicate(&port_path.child("name"), name));
                    }
                }
                None if ports.len() > 1 => {
                    errors.push(FieldError::required(&port_path.child("name"), ""))
                }
                None => {}
            }
            for msg in names::port_number(i64::from(port.port)) {
                errors.push(FieldError::invalid(
                    &port_path.child("port"),
                    port.port,
                    msg,
                ));
            }
            one_of(
                port.protocol.as_deref(),
                PROTOCOLS,
                &port_path.child("protocol"),
                errors,
            );
        }
    }
}
