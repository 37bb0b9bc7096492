//! Every validation rule, checked against Kubernetes' wording and field paths.

use skiff_api::validation::names;
use skiff_api::{FieldValidation, Object};

use crate::{decode_one, validation_errors};

/// A pod whose spec is `spec` (YAML flow or block under `spec:`).
fn pod(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}")
}

/// A deployment with the given spec lines (indented by two spaces).
fn deployment(spec: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n{spec}")
}

const TEMPLATE: &str = "  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: i}]}\n";

fn check(input: &str, expected: &[&str]) {
    assert_eq!(validation_errors(input), expected, "{input}");
}

#[test]
fn valid_minimal_objects_pass() {
    check(&pod("  containers: [{name: c, image: i}]\n"), &[]);
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n{TEMPLATE}"
        )),
        &[],
    );
    check(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        &[],
    );
    check(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: None, selector: {app: web}}\n",
        &[],
    );
    check(
        "apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\nspec: {containers: [{name: c, image: i}]}\n",
        &[],
    );
}

#[test]
fn object_names_follow_each_kinds_rule() {
    check(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n",
        &[
            "metadata.name: Invalid value: \"Shop\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ],
    );
    check(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n",
        &[
            "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ],
    );
    let errors = validation_errors(
        "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {clusterIP: None}\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label"),
        "{errors:?}"
    );
    let long = "a".repeat(254);
    let errors = validation_errors(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {long}}}\nspec: {{containers: [{{name: c, image: i}}]}}\n"
    ));
    assert_eq!(
        errors,
        [format!(
            "metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
        )]
    );
    check(
        "apiVersion: v1\nkind: Pod\nmetadata: {namespace: default}\nspec: {containers: [{name: c, image: i}]}\n",
        &["metadata.name: Required value: name or generateName is required"],
    );
    check(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, namespace: default}\n",
        &["metadata.namespace: Forbidden: not allowed on this type"],
    );
}

#[test]
fn labels_and_annotations_are_checked() {
    let errors = validation_errors(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: labelled, labels: {-bad: ok, good: -bad-}}\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("metadata.labels: Invalid value: \"-bad\": name part must consist of alphanumeric characters"), "{errors:?}");
    assert!(
        errors[1].starts_with(
            "metadata.labels: Invalid value: \"-bad-\": a valid label must be an empty string"
        ),
        "{errors:?}"
    );
    let huge = "x".repeat(256 * 1024);
    let errors = validation_errors(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: annotated, annotations: {{big: {huge}}}}}\n"
    ));
    assert_eq!(
        errors,
        ["metadata.annotations: Too long: must have at most 262144 bytes"]
    );
}

#[test]
fn containers_are_checked() {
    check(
        &pod("  containers: []\n"),
        &["spec.containers: Required value"],
    );
    check(
        &pod("  containers: [{name: c}]\n"),
        &["spec.containers[0].image: Required value"],
    );
    check(
        &pod("  containers: [{name: c, image: \"  \"}]\n"),
        &["spec.containers[0].image: Required value"],
    );
    check(
        &pod("  containers: [{name: c, image: \" i\"}]\n"),
        &[
            "spec.containers[0].image: Invalid value: \" i\": must not have leading or trailing whitespace",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i}, {name: c, image: i}]\n"),
        &["spec.containers[1].name: Duplicate value: \"c\""],
    );
    check(
        &pod("  initContainers: [{name: c, image: i}]\n  containers: [{name: c, image: i}]\n"),
        &["spec.containers[0].name: Duplicate value: \"c\""],
    );
    check(
        &pod("  containers: [{name: c, image: i, imagePullPolicy: Sometimes}]\n"),
        &[
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
        ],
    );
    check(
        &pod("  restartPolicy: Sometimes\n  containers: [{name: c, image: i}]\n"),
        &[
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i, env: [{name: 1BAD, value: x}]}]\n"),
        &[
            "spec.containers[0].env[0].name: Invalid value: \"1BAD\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
        ],
    );
    check(
        &pod("  terminationGracePeriodSeconds: -1\n  containers: [{name: c, image: i}]\n"),
        &[
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
        ],
    );
}

#[test]
fn ports_are_checked() {
    check(
        &pod(
            "  containers: [{name: c, image: i, ports: [{containerPort: 0}, {containerPort: 70000}]}]\n",
        ),
        &[
            "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ],
    );
    check(
        &pod(
            "  containers: [{name: c, image: i, ports: [{containerPort: 80, name: http}, {containerPort: 81, name: http}]}]\n",
        ),
        &["spec.containers[0].ports[1].name: Duplicate value: \"http\""],
    );
    check(
        &pod("  containers: [{name: c, image: i, ports: [{containerPort: 80, name: \"8080\"}]}]\n"),
        &[
            "spec.containers[0].ports[0].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i, ports: [{containerPort: 80, protocol: HTTP}]}]\n"),
        &[
            "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
        ],
    );
    check(
        &pod(
            "  containers: [{name: a, image: i, ports: [{containerPort: 80, hostPort: 8080}]}, {name: b, image: i, ports: [{containerPort: 81, hostPort: 8080}]}]\n",
        ),
        &["spec.containers[1].ports[0].hostPort: Duplicate value: \"8080/TCP\""],
    );
    check(
        &pod(
            "  hostNetwork: true\n  containers: [{name: c, image: i, ports: [{containerPort: 80, hostPort: 81}]}]\n",
        ),
        &[
            "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true",
        ],
    );
}

#[test]
fn resources_use_exact_quantities() {
    check(
        &pod(
            "  containers: [{name: c, image: i, resources: {requests: {cpu: 100m, memory: 129e6}, limits: {cpu: \"2\", memory: 1.5Gi}}}]\n",
        ),
        &[],
    );
    check(
        &pod("  containers: [{name: c, image: i, resources: {requests: {cpu: lots}}}]\n"),
        &[
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i, resources: {limits: {memory: 5Gb}}}]\n"),
        &[
            "spec.containers[0].resources.limits[memory]: Invalid value: \"5Gb\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[0].resources.requests[memory]: Invalid value: \"5Gb\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i, resources: {requests: {cpu: \"-1\"}}}]\n"),
        &[
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
        ],
    );
    check(
        &pod(
            "  containers: [{name: c, image: i, resources: {requests: {cpu: \"2\"}, limits: {cpu: 1500m}}}]\n",
        ),
        &[
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1500m",
        ],
    );
    check(
        &pod(
            "  containers: [{name: c, image: i, resources: {requests: {nvidia.com/gpu: \"1\"}}}]\n",
        ),
        &[
            "spec.containers[0].resources.requests[nvidia.com/gpu]: Unsupported value: \"nvidia.com/gpu\": supported values: \"cpu\", \"memory\", \"ephemeral-storage\"",
        ],
    );
}

#[test]
fn probes_are_checked() {
    check(
        &pod("  containers: [{name: c, image: i, livenessProbe: {periodSeconds: 5}}]\n"),
        &["spec.containers[0].livenessProbe: Required value: must specify a handler type"],
    );
    check(
        &pod(
            "  containers: [{name: c, image: i, livenessProbe: {exec: {command: [sh]}, tcpSocket: {port: 80}}}]\n",
        ),
        &["spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type"],
    );
    check(
        &pod(
            "  containers: [{name: c, image: i, livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}}]\n",
        ),
        &["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"],
    );
    check(
        &pod("  containers: [{name: c, image: i, readinessProbe: {httpGet: {port: 0}}}]\n"),
        &[
            "spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i, readinessProbe: {httpGet: {port: Web_Port}}}]\n"),
        &[
            "spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"Web_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ],
    );
    check(
        &pod("  containers: [{name: c, image: i, startupProbe: {exec: {command: []}}}]\n"),
        &["spec.containers[0].startupProbe.exec.command: Required value"],
    );
    check(
        &pod(
            "  initContainers: [{name: init, image: i, readinessProbe: {tcpSocket: {port: 80}}}]\n  containers: [{name: c, image: i}]\n",
        ),
        &[
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
        ],
    );
}

#[test]
fn volumes_and_mounts_are_checked() {
    check(
        &pod("  volumes: [{name: v}]\n  containers: [{name: c, image: i}]\n"),
        &["spec.volumes[0]: Required value: must specify a volume type"],
    );
    check(
        &pod(
            "  volumes: [{name: v, emptyDir: {}, hostPath: {path: /x}}]\n  containers: [{name: c, image: i}]\n",
        ),
        &["spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"],
    );
    check(
        &pod(
            "  volumes: [{name: v, hostPath: {path: /var/../etc}}]\n  containers: [{name: c, image: i}]\n",
        ),
        &["spec.volumes[0].hostPath.path: Invalid value: \"/var/../etc\": must not contain '..'"],
    );
    check(
        &pod(
            "  volumes: [{name: v, emptyDir: {}}, {name: v, emptyDir: {}}]\n  containers: [{name: c, image: i}]\n",
        ),
        &["spec.volumes[1].name: Duplicate value: \"v\""],
    );
    check(
        &pod(
            "  containers: [{name: c, image: i, volumeMounts: [{name: data, mountPath: /data}]}]\n",
        ),
        &["spec.containers[0].volumeMounts[0].name: Not found: \"data\""],
    );
    check(
        &pod(
            "  volumes: [{name: v, emptyDir: {}}]\n  containers: [{name: c, image: i, volumeMounts: [{name: v, mountPath: /d}, {name: v, mountPath: /d}]}]\n",
        ),
        &["spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique"],
    );
    check(
        &pod(
            "  volumes: [{name: v, emptyDir: {sizeLimit: huge}}]\n  containers: [{name: c, image: i}]\n",
        ),
        &[
            "spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"huge\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ],
    );
}

#[test]
fn scheduling_fields_are_checked() {
    check(
        &pod("  nodeSelector: {disk: -ssd}\n  containers: [{name: c, image: i}]\n"),
        &[
            "spec.nodeSelector: Invalid value: \"-ssd\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ],
    );
    check(
        &pod("  tolerations: [{operator: Equal, value: x}]\n  containers: [{name: c, image: i}]\n"),
        &[
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ],
    );
    check(
        &pod(
            "  tolerations: [{key: k, operator: Exists, value: x}]\n  containers: [{name: c, image: i}]\n",
        ),
        &[
            "spec.tolerations[0].operator: Invalid value: \"x\": value must be empty when `operator` is 'Exists'",
        ],
    );
    check(
        &pod(
            "  tolerations: [{key: k, effect: NoSchedule, tolerationSeconds: 5}]\n  containers: [{name: c, image: i}]\n",
        ),
        &[
            "spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        ],
    );
    check(
        &pod("  tolerations: [{key: k, effect: Sometimes}]\n  containers: [{name: c, image: i}]\n"),
        &[
            "spec.tolerations[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        ],
    );
    check(
        &pod("  nodeName: Worker_1\n  containers: [{name: c, image: i}]\n"),
        &[
            "spec.nodeName: Invalid value: \"Worker_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ],
    );
}

#[test]
fn deployments_are_checked() {
    check(
        &deployment(&format!(
            "  replicas: -1\n  selector: {{matchLabels: {{app: web}}}}\n{TEMPLATE}"
        )),
        &["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: db}}}}\n{TEMPLATE}"
        )),
        &[
            "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`",
        ],
    );
    check(
        &deployment(&format!("  selector: {{}}\n{TEMPLATE}")),
        &["spec.selector: Invalid value: {}: empty selector is invalid for deployment"],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchExpressions: [{{key: app, operator: Like, values: [web]}}]}}\n{TEMPLATE}"
        )),
        &[
            "spec.selector.matchExpressions[0].operator: Invalid value: \"Like\": not a valid selector operator",
            "spec.selector: Invalid value: {\"matchExpressions\":[{\"key\":\"app\",\"operator\":\"Like\",\"values\":[\"web\"]}]}: invalid label selector",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchExpressions: [{{key: app, operator: In}}]}}\n{TEMPLATE}"
        )),
        &[
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.selector: Invalid value: {\"matchExpressions\":[{\"key\":\"app\",\"operator\":\"In\"}]}: invalid label selector",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchExpressions: [{{key: app, operator: Exists, values: [web]}}]}}\n{TEMPLATE}"
        )),
        &[
            "spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.selector: Invalid value: {\"matchExpressions\":[{\"key\":\"app\",\"operator\":\"Exists\",\"values\":[\"web\"]}]}: invalid label selector",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{type: Recreate, rollingUpdate: {{maxSurge: 1}}}}\n{TEMPLATE}"
        )),
        &[
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{type: BlueGreen}}\n{TEMPLATE}"
        )),
        &[
            "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{rollingUpdate: {{maxSurge: 0, maxUnavailable: 0%}}}}\n{TEMPLATE}"
        )),
        &[
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{rollingUpdate: {{maxSurge: lots, maxUnavailable: 150%}}}}\n{TEMPLATE}"
        )),
        &[
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
        ],
    );
    check(
        &deployment(
            "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {restartPolicy: Never, containers: [{name: c, image: i}]}\n",
        ),
        &[
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  minReadySeconds: 10\n  progressDeadlineSeconds: 10\n{TEMPLATE}"
        )),
        &["spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds"],
    );
    check(
        &deployment(&format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  revisionHistoryLimit: -2\n{TEMPLATE}"
        )),
        &["spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0"],
    );
}

#[test]
fn services_are_checked() {
    let service = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {spec}\n")
    };
    check(
        &service("{selector: {app: web}}"),
        &["spec.ports: Required value"],
    );
    check(
        &service("{ports: [{port: 80}, {port: 81}]}"),
        &[
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value",
        ],
    );
    check(
        &service("{ports: [{name: a, port: 80}, {name: a, port: 81}]}"),
        &["spec.ports[1].name: Duplicate value: \"a\""],
    );
    check(
        &service("{ports: [{name: a, port: 80}, {name: b, port: 80}]}"),
        &["spec.ports[1]: Duplicate value: \"80/TCP\""],
    );
    check(
        &service("{ports: [{port: 80, targetPort: 70000}]}"),
        &["spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"],
    );
    check(
        &service("{ports: [{port: 80, nodePort: 30080}]}"),
        &["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
    );
    check(
        &service("{type: ExternalName, ports: [{port: 80}]}"),
        &[
            "spec.type: Unsupported value: \"ExternalName\": supported values: \"ClusterIP\", \"NodePort\", \"LoadBalancer\"",
        ],
    );
    check(
        &service("{clusterIP: 10.96.0.300, ports: [{port: 80}]}"),
        &[
            "spec.clusterIP: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ],
    );
    check(
        &service("{sessionAffinity: Sticky, ports: [{port: 80}]}"),
        &[
            "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"None\", \"ClientIP\"",
        ],
    );
    check(
        &service("{type: NodePort, clusterIP: None, ports: [{port: 80}]}"),
        &[
            "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort services",
        ],
    );
}

#[test]
fn endpoints_nodes_and_events_are_checked() {
    check(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: not-an-ip}], ports: [{port: 80}, {port: 81}]}]\n",
        &[
            "subsets[0].addresses[0].ip: Invalid value: \"not-an-ip\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "subsets[0].ports[0].name: Required value",
            "subsets[0].ports[1].name: Required value",
        ],
    );
    check(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.1.0/33, taints: [{key: a, effect: NoSchedule}, {key: a, effect: NoSchedule}]}\n",
        &[
            "spec.podCIDR: Invalid value: \"10.244.1.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.taints[1]: Duplicate value: \"a:NoSchedule\": taints must be unique by key and effect pair",
        ],
    );
    check(
        "apiVersion: v1\nkind: Event\nmetadata: {name: e, namespace: a}\ninvolvedObject: {kind: Pod, name: p, namespace: b}\ntype: Odd\n",
        &[
            "involvedObject.namespace: Invalid value: \"b\": does not match event.namespace",
            "type: Unsupported value: \"Odd\": supported values: \"Normal\", \"Warning\"",
        ],
    );
}

#[test]
fn immutable_fields_are_refused_on_update() {
    let decode = |input: &str| decode_one(input, FieldValidation::Strict).unwrap().object;
    let old = decode(&deployment(&format!(
        "  selector: {{matchLabels: {{app: web}}}}\n{TEMPLATE}"
    )));
    let new = decode(&deployment(
        "  selector: {matchLabels: {app: web, v: two}}\n  template:\n    metadata: {labels: {app: web, v: two}}\n    spec: {containers: [{name: c, image: i}]}\n",
    ));
    let errors: Vec<String> = new
        .validate_update(&old)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"two\"}}: field is immutable"
        ]
    );

    let old_pod = decode(&pod("  containers: [{name: c, image: i:1}]\n"));
    let new_image = decode(&pod("  containers: [{name: c, image: i:2}]\n"));
    assert!(
        new_image.validate_update(&old_pod).is_empty(),
        "the image may change"
    );
    let new_command = decode(&pod(
        "  containers: [{name: c, image: i:1, command: [sh]}]\n",
    ));
    let errors = new_command.validate_update(&old_pod);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("spec: Forbidden: pod updates may not change fields other than"),
        "{errors:?}"
    );

    let renamed = {
        let mut object = old_pod.clone();
        object.metadata_mut().name = Some("q".into());
        object
    };
    let errors: Vec<String> = renamed
        .validate_update(&old_pod)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["metadata.name: Invalid value: \"q\": field is immutable"]
    );
    assert!(matches!(old_pod, Object::Pod(_)));
}

#[test]
fn string_format_checks_are_public_for_other_crates() {
    assert!(names::dns1123_label("web").is_empty());
    assert!(!names::dns1123_label("Web").is_empty());
}
