//! Supported fields survive decode → encode unchanged, in both formats.

use serde_json::{Value, json};
use skiff_api::codec::{self, Format, Limits};
use skiff_api::types::IntOrString;
use skiff_api::{Object, kind};

use crate::{decode_all, fixture};

/// Decoding then encoding gives back exactly the document's JSON value.
fn assert_lossless(name: &str) {
    let input = fixture(name);
    let originals =
        codec::parse_manifests(&input, Format::detect(&input), &Limits::MANIFEST).unwrap();
    let objects = decode_all(&input);
    assert_eq!(originals.len(), objects.len());
    for (original, object) in originals.iter().zip(&objects) {
        assert_eq!(
            object.to_value(),
            original.value,
            "{name} {}",
            original.location()
        );
        assert!(
            object.validate().is_empty(),
            "{name}: {:?}",
            object.validate()
        );
    }
}

#[test]
fn realistic_manifests_round_trip_losslessly() {
    for name in [
        "web-deployment.yaml",
        "web-service.yaml",
        "batch-pod.json",
        "cluster-objects.yaml",
    ] {
        assert_lossless(name);
    }
}

#[test]
fn yaml_and_json_decode_to_the_same_object() {
    let yaml = fixture("web-deployment.yaml");
    let from_yaml = decode_all(&yaml);
    let json = serde_json::to_vec(&from_yaml[0].to_value()).unwrap();
    assert_eq!(Format::detect(&json), Format::Json);
    assert_eq!(decode_all(&json), from_yaml);
}

#[test]
fn lists_and_multiple_documents_expand_in_order() {
    let input = fixture("cluster-objects.yaml");
    let manifests = codec::parse_manifests(&input, Format::Yaml, &Limits::MANIFEST).unwrap();
    let locations: Vec<String> = manifests.iter().map(|m| m.location()).collect();
    assert_eq!(
        locations,
        [
            "document 1",
            "document 2, items[0]",
            "document 2, items[1]",
            "document 2, items[2]",
            "document 3"
        ]
    );
    let kinds: Vec<&str> = decode_all(&input).iter().map(|o| o.kind().kind).collect();
    assert_eq!(
        kinds,
        ["Namespace", "Node", "Endpoints", "ReplicaSet", "Event"]
    );
}

#[test]
fn numeric_quantities_become_strings_like_kubernetes() {
    let input = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i","resources":{"limits":{"memory":128974848,"cpu":0.5},"requests":{"memory":129e6}}}]}}"#;
    let objects = decode_all(input.as_bytes());
    let value = objects[0].to_value();
    let resources = &value["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["limits"],
        json!({"memory": "128974848", "cpu": "0.5"})
    );
    assert_eq!(resources["requests"], json!({"memory": "129000000"}));
}

#[test]
fn defaults_match_kubernetes_and_are_idempotent() {
    let input = r"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: httpd
          image: 127.0.0.1:5055/skiff/httpd
          ports: [{containerPort: 80}]
          resources: {limits: {cpu: 500m}}
          readinessProbe: {httpGet: {port: 80}}
";
    let mut object = decode_all(input.as_bytes()).remove(0);
    object.apply_defaults();
    let once = object.clone();
    object.apply_defaults();
    assert_eq!(object, once, "defaulting twice changes nothing");
    let Object::Deployment(deployment) = object else {
        panic!("not a deployment")
    };
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
    assert_eq!(
        rolling.max_unavailable,
        Some(IntOrString::String("25%".into()))
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let container = &pod.containers[0];
    assert_eq!(
        container.image_pull_policy.as_deref(),
        Some("Always"),
        "untagged image"
    );
    assert_eq!(
        container.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    // Kubernetes copies limits into requests for pods only, never for templates.
    assert!(container.resources.as_ref().unwrap().requests.is_none());
    let probe = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        (
            probe.timeout_seconds,
            probe.period_seconds,
            probe.success_threshold,
            probe.failure_threshold
        ),
        (Some(1), Some(10), Some(1), Some(3))
    );
    assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
}

#[test]
fn service_defaults_target_port_to_port() {
    let input = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
    let mut object = decode_all(input.as_bytes()).remove(0);
    object.apply_defaults();
    let value = object.to_value();
    assert_eq!(value["spec"]["type"], "ClusterIP");
    assert_eq!(value["spec"]["sessionAffinity"], "None");
    assert_eq!(
        value["spec"]["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(object.kind(), &kind::SERVICE);
}

#[test]
fn yaml_scalars_follow_kubernetes_yaml_rules() {
    // go-yaml v2 (what kubectl and kube-apiserver use) reads `0755` as octal and
    // `yes` as a boolean; quoted values stay strings.
    let input = "a: 0755\nb: yes\nc: 'yes'\nd: 1.5\ne: ~\n";
    let docs = codec::parse_documents(input.as_bytes(), Format::Yaml, &Limits::REQUEST).unwrap();
    assert_eq!(
        docs,
        vec![json!({"a": 493, "b": true, "c": "yes", "d": 1.5, "e": Value::Null})]
    );
}

#[test]
fn zero_values_are_defaulted_like_kubernetes() {
    let input = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  restartPolicy: ""
  hostNetwork: true
  containers:
    - name: c
      image: i:1
      imagePullPolicy: ""
      ports: [{containerPort: 8080, protocol: ""}]
      resources: {limits: {memory: 64Mi}}
      livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 0, failureThreshold: 0, successThreshold: 0}
"#;
    let mut object = decode_all(input.as_bytes()).remove(0);
    object.apply_defaults();
    assert!(object.validate().is_empty(), "{:?}", object.validate());
    let value = object.to_value();
    let container = &value["spec"]["containers"][0];
    assert_eq!(value["spec"]["restartPolicy"], "Always");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        container["ports"][0],
        json!({"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"})
    );
    assert_eq!(
        container["resources"]["requests"],
        json!({"memory": "64Mi"}),
        "a pod's requests default to its limits"
    );
    let probe = &container["livenessProbe"];
    assert_eq!(
        (
            &probe["periodSeconds"],
            &probe["failureThreshold"],
            &probe["successThreshold"]
        ),
        (&json!(10), &json!(3), &json!(1))
    );

    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: \"\", ports: [{port: 80, targetPort: 0}, {name: b, port: 81, targetPort: \"\"}]}\n";
    let mut object = decode_all(service.as_bytes()).remove(0);
    object.apply_defaults();
    let value = object.to_value();
    assert_eq!(value["spec"]["type"], "ClusterIP");
    assert_eq!(
        (
            &value["spec"]["ports"][0]["targetPort"],
            &value["spec"]["ports"][1]["targetPort"]
        ),
        (&json!(80), &json!(81))
    );
}
