//! Diagnostics of `parse_manifest`: what is an error, what is a warning, and how they read.

use std::path::Path;

use halyard_model::*;

fn parse(text: &str) -> Result<ParsedFile, FileError> {
    parse_manifest(Path::new("examples/pools.yaml"), text)
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(f) => panic!("expected errors, got {} objects and warnings {:#?}", f.objects.len(), f.warnings),
        Err(e) => e.errors().cloned().collect(),
    }
}

fn only_error(text: &str) -> Diagnostic {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected exactly one error: {errs:#?}");
    errs.into_iter().next().unwrap()
}

fn warnings(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(f) => f.warnings,
        Err(e) => panic!("expected no errors:\n{e}"),
    }
}

const POOL_HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata:\n  name: blue\n";

#[test]
fn bad_cidr_names_field_line_and_column() {
    let text = "\
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata:
  name: green
---
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata:
  name: blue
spec:
  blocks:
  - cidr: 10.0.0.0/24
  - cidr: \"10.0.0.300/24\"
";
    let errs = errors(text);
    // Document 1 has no blocks (an error of its own); document 2 has the bad CIDR.
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let d = &errs[1];
    assert_eq!(d.document, 2);
    assert_eq!(d.field.as_deref(), Some("spec.blocks[1].cidr"));
    assert_eq!(d.message, "invalid CIDR \"10.0.0.300/24\"");
    assert_eq!((d.line, d.column), (Some(13), Some(11)));
    assert_eq!(d.object.as_deref(), Some("CiliumLoadBalancerIPPool blue"));
    assert_eq!(
        d.to_string(),
        "examples/pools.yaml: document 2 (CiliumLoadBalancerIPPool blue): spec.blocks[1].cidr: \
         invalid CIDR \"10.0.0.300/24\" (line 13, column 11)"
    );
}

#[test]
fn bad_range_block_names_the_block() {
    let d = only_error(&format!("{POOL_HEAD}spec:\n  blocks:\n  - start: 10.0.0.9\n    stop: 10.0.0.1\n"));
    assert_eq!(d.field.as_deref(), Some("spec.blocks[0]"));
    assert!(d.message.contains("start 10.0.0.9 is after stop 10.0.0.1"), "{}", d.message);
    assert!(d.line.is_some());

    let d = only_error(&format!("{POOL_HEAD}spec:\n  blocks:\n  - start: 10.0.0.1\n    stop: fd00::1\n"));
    assert!(d.message.contains("different IP families"), "{}", d.message);

    let d = only_error(&format!("{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n    start: 10.0.0.1\n"));
    assert!(d.message.contains("not both"), "{}", d.message);

    let d = only_error(&format!("{POOL_HEAD}spec:\n  blocks:\n  - start: 10.0.0.1x\n"));
    assert_eq!(d.field.as_deref(), Some("spec.blocks[0].start"));
    assert_eq!(d.message, "invalid IP address \"10.0.0.1x\"");
}

#[test]
fn a_pool_needs_blocks() {
    let d = only_error(&format!("{POOL_HEAD}spec:\n  disabled: true\n"));
    assert_eq!(d.field.as_deref(), Some("spec.blocks"));
    let d = only_error(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nspec:\n  addresses: []\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.addresses"));
}

#[test]
fn metallb_address_errors() {
    let d = only_error(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nspec:\n  addresses:\n  - 10.0.0.0/24\n  - 1.2.3.4 - 1.2.3.400\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.addresses[1]"));
    assert_eq!(d.message, "invalid IP range \"1.2.3.4 - 1.2.3.400\": invalid end IP \"1.2.3.400\"");
    assert_eq!(d.line, Some(8));
    // Overlapping ranges are an error for MetalLB (it rejects the whole configuration).
    let d = only_error(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nspec:\n  addresses:\n  - 10.0.0.0/24\n  - 10.0.0.5-10.0.0.7\n",
    );
    assert!(d.message.contains("overlaps"), "{}", d.message);
}

#[test]
fn spaces_around_the_dash_of_a_metallb_range_are_fine() {
    let f = parse(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nspec:\n  addresses:\n  - 10.0.0.1 - 10.0.0.9\n  - fc00::1 -fc00::9\n",
    )
    .unwrap();
    let Object::IpAddressPool(p) = &f.objects[0] else { panic!() };
    assert_eq!(p.spec.addresses[1].last().to_string(), "fc00::9");
}

#[test]
fn unknown_selector_operator_is_an_error_at_the_operator() {
    let d = only_error(&format!(
        "{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n  serviceSelector:\n    matchExpressions:\n      - {{key: color, operator: Inn, values: [blue]}}\n"
    ));
    assert_eq!(d.field.as_deref(), Some("spec.serviceSelector.matchExpressions[0].operator"));
    assert!(d.message.starts_with("unknown variant `Inn`, expected one of `In`, `NotIn`"), "{}", d.message);
    assert_eq!(d.line, Some(10));
}

#[test]
fn selector_operator_values_rules() {
    let errs = errors(&format!(
        "{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n  serviceSelector:\n    matchExpressions:\n      - key: something\n        operator: NotIn\n        values:\n      - key: other\n        operator: Exists\n        values: [x]\n"
    ));
    let fields: Vec<_> = errs.iter().map(|d| d.field.as_deref().unwrap()).collect();
    assert_eq!(
        fields,
        ["spec.serviceSelector.matchExpressions[0].values", "spec.serviceSelector.matchExpressions[1].values"]
    );
    assert!(errs[0].message.contains("needs at least one value"));
    assert!(errs[1].message.contains("takes no values"));
}

#[test]
fn missing_name_is_an_error_naming_metadata_name() {
    let d = only_error(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nspec:\n  blocks:\n  - cidr: 10.0.0.0/24\n",
    );
    assert_eq!(d.field.as_deref(), Some("metadata.name"));
    assert_eq!(d.message, "name is required");
    assert_eq!(d.object.as_deref(), Some("CiliumLoadBalancerIPPool"));
}

#[test]
fn doc_example_without_metadata_is_rejected_and_its_typo_reported() {
    // bgp-control-plane-v1.rst, section "Timers": no metadata, and `connetRetryTimeSeconds` is
    // misspelt in the docs. kubectl would refuse it too (no name).
    let text = r#"apiVersion: "cilium.io/v2alpha1"
kind: CiliumBGPPeeringPolicy
spec:
  nodeSelector:
    matchLabels:
      rack: rack0
  virtualRouters:
  - localASN: 64512
    neighbors:
    - peerAddress: '10.0.0.1/32'
      peerASN: 64512
      connetRetryTimeSeconds: 90 # <-- specify the ConnectRetryTimer
      holdTimeSeconds: 9         # <-- specify the HoldTimer
      keepAliveTimeSeconds: 3    # <-- specify the KeepaliveTimer
"#;
    let e = parse(text).unwrap_err();
    let errs: Vec<_> = e.errors().collect();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field.as_deref(), Some("metadata.name"));
    let warns: Vec<_> = e.warnings().collect();
    assert_eq!(warns.len(), 1);
    assert_eq!(warns[0].field.as_deref(), Some("spec.virtualRouters[0].neighbors[0].connetRetryTimeSeconds"));
    assert_eq!(warns[0].message, "unknown field ignored");
}

#[test]
fn invalid_names() {
    let d = only_error(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata:\n  name: Blue_Pool\nspec:\n  blocks:\n  - cidr: 10.0.0.0/24\n",
    );
    assert_eq!(d.field.as_deref(), Some("metadata.name"));
    assert!(d.message.contains("DNS-1123 subdomain"), "{}", d.message);
    // Services need a DNS-1035 label (no dots, starts with a letter).
    let d = only_error("apiVersion: v1\nkind: Service\nmetadata:\n  name: 1web\nspec:\n  ports:\n  - port: 80\n");
    assert!(d.message.contains("DNS-1035 label"), "{}", d.message);
    let d = only_error("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n");
    assert!(d.message.contains("DNS-1123 label"), "{}", d.message);
}

#[test]
fn unknown_kind_is_a_warning_and_skipped() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n";
    let f = parse(&format!("{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n---\n{text}")).unwrap();
    assert_eq!(f.objects.len(), 1);
    assert_eq!(f.warnings.len(), 1);
    let w = &f.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.document, 2);
    assert_eq!(
        w.to_string(),
        "warning: examples/pools.yaml: document 2 (Deployment web): unknown kind Deployment (apiVersion apps/v1): skipped"
    );
}

#[test]
fn unknown_field_is_a_warning_with_its_path() {
    let w = warnings(&format!(
        "{POOL_HEAD}  lables:\n    a: b\nspec:\n  blocks:\n  - cidr: 10.0.0.0/24\n    stopp: 1\n  serviceSelecter:\n    matchLabels:\n      color: blue\n"
    ));
    let fields: Vec<_> = w.iter().map(|d| d.field.as_deref().unwrap()).collect();
    assert_eq!(fields, ["metadata.lables", "spec.blocks[0].stopp", "spec.serviceSelecter"]);
    assert!(w.iter().all(|d| d.message == "unknown field ignored" && d.severity == Severity::Warning));
    assert_eq!(
        w[2].to_string(),
        "warning: examples/pools.yaml: document 1 (CiliumLoadBalancerIPPool blue): spec.serviceSelecter: unknown field ignored"
    );
}

#[test]
fn pasted_kubectl_output_has_no_spurious_warnings() {
    let text = r#"apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata:
  creationTimestamp: "2024-05-09T15:13:32Z"
  generation: 1
  managedFields:
  - apiVersion: cilium.io/v2alpha1
    fieldsType: FieldsV1
  name: blue-pool
  resourceVersion: "449966"
  uid: e3c9c020-6e24-4c5c-9df9-d0c50f6c4cec
spec:
  allowFirstLastIPs: "No"
  blocks:
  - cidr: 10.0.10.0/24
  - cidr: ""
    start: 20.0.20.100
    stop: 20.0.20.200
  disabled: false
status:
  conditions:
  - lastTransitionTime: "2022-10-25T14:08:55Z"
    message: "254"
    type: cilium.io/IPsTotal
"#;
    let f = parse(text).unwrap();
    assert!(f.warnings.is_empty(), "{:#?}", f.warnings);
    let Object::CiliumLoadBalancerIPPool(p) = &f.objects[0] else { panic!() };
    assert!(!p.allow_first_last_ips());
    assert_eq!(p.metadata.generation, Some(1));
    assert_eq!(p.metadata.resource_version.as_deref(), Some("449966"));
    assert_eq!(p.spec.blocks.len(), 2);
}

#[test]
fn unsupported_api_version_lists_supported_ones() {
    let d = only_error("apiVersion: cilium.io/v1\nkind: CiliumLoadBalancerIPPool\nmetadata:\n  name: blue\n");
    assert_eq!(d.field.as_deref(), Some("apiVersion"));
    assert_eq!(
        d.message,
        "unsupported apiVersion \"cilium.io/v1\" for kind CiliumLoadBalancerIPPool (supported: cilium.io/v2, cilium.io/v2alpha1)"
    );
    let d = only_error("apiVersion: metallb.io/v1beta2\nkind: IPAddressPool\nmetadata:\n  name: p\n");
    assert!(d.message.contains("(supported: metallb.io/v1beta1)"), "{}", d.message);
}

#[test]
fn missing_kind_and_api_version() {
    let errs = errors("metadata:\n  name: x\n");
    let fields: Vec<_> = errs.iter().map(|d| d.field.as_deref().unwrap()).collect();
    assert_eq!(fields, ["apiVersion", "kind"]);
    let d = only_error("apiVersion: v1\nkind: 7\nmetadata:\n  name: x\n");
    assert_eq!(d.message, "kind must be a non-empty string");
}

#[test]
fn duplicate_object_in_one_file() {
    let pool = format!("{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n");
    let d = only_error(&format!("{pool}---\n{pool}"));
    assert_eq!(d.document, 2);
    assert_eq!(d.message, "duplicate object: CiliumLoadBalancerIPPool blue is already defined in document 1");

    // A Service without namespace is in "default".
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";
    let d = only_error(&format!("{svc}---\n{svc}  namespace: default\n"));
    assert!(d.message.contains("Service default/web"), "{}", d.message);
    // Same name in another namespace is another object.
    parse(&format!("{svc}---\n{svc}  namespace: prod\n")).unwrap();
}

#[test]
fn all_errors_of_a_file_are_collected_and_nothing_is_applied() {
    let good = format!("{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n");
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 70000\n---\n{good}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web2\nspec:\n  ports:\n  - port: 80\n    protocol: HTTP\n"
    );
    let e = parse(&text).unwrap_err();
    let errs: Vec<_> = e.errors().collect();
    assert_eq!(errs.len(), 2, "{e}");
    assert_eq!((errs[0].document, errs[0].field.as_deref()), (1, Some("spec.ports[0].port")));
    assert_eq!(errs[0].message, "port 70000 is out of range 1-65535");
    assert_eq!(errs[0].line, Some(7));
    assert_eq!((errs[1].document, errs[1].field.as_deref()), (3, Some("spec.ports[0].protocol")));
    assert!(errs[1].message.contains("unknown variant `HTTP`"), "{}", errs[1].message);
    assert!(e.to_string().starts_with("2 errors in manifest file\n  examples/pools.yaml: document 1"), "{e}");
}

#[test]
fn service_field_validation() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n";
    let d = only_error(&format!("{svc}  ipFamilyPolicy: DualStack\n"));
    assert_eq!(d.field.as_deref(), Some("spec.ipFamilyPolicy"));
    let d = only_error(&format!("{svc}  ipFamilies: [IPv4, IPv5]\n"));
    assert_eq!(d.field.as_deref(), Some("spec.ipFamilies[1]"));
    let d = only_error(&format!("{svc}  ipFamilies: [IPv4, IPv4]\n  ipFamilyPolicy: PreferDualStack\n"));
    assert_eq!(d.field.as_deref(), Some("spec.ipFamilies"));
    let d = only_error(&format!("{svc}  externalIPs: [192.0.2.1, nope]\n"));
    assert_eq!(d.field.as_deref(), Some("spec.externalIPs[1]"));
    let d = only_error(&format!("{svc}  ports:\n  - port: 80\n  - port: 443\n    name: https\n"));
    assert_eq!(d.field.as_deref(), Some("spec.ports[0].name"));

    let f = parse(&format!(
        "{svc}  type: LoadBalancer\n  clusterIP: None\n  loadBalancerIP: \"\"\n  ports:\n  - name: http\n    port: 80\n    targetPort: http-web\n  - name: dns\n    port: 53\n    protocol: UDP\n    targetPort: \"5353\"\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 192.0.2.10\n      ipMode: VIP\n"
    ))
    .unwrap();
    let Object::Service(s) = &f.objects[0] else { panic!() };
    assert_eq!(s.spec.cluster_ip, Some(ClusterIp::Headless));
    assert_eq!(s.spec.load_balancer_ip, None);
    assert_eq!(s.spec.ports[0].target_port(), TargetPort::Name("http-web".into()));
    assert_eq!(s.spec.ports[1].target_port(), TargetPort::Number(5353));
    assert_eq!(s.status.load_balancer.ingress[0].ip, Some("192.0.2.10".parse().unwrap()));
}

#[test]
fn scope_rules() {
    // Namespaced kinds default to "default"; cluster-scoped kinds drop a namespace with a warning.
    let f = parse("apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: a\n").unwrap();
    assert_eq!(f.objects[0].key().namespace.as_deref(), Some("default"));
    assert_eq!(f.objects[0].metadata().namespace.as_deref(), Some("default"));
    let f = parse(&format!("{POOL_HEAD}  namespace: kube-system\nspec:\n  blocks:\n  - cidr: 10.0.0.0/24\n")).unwrap();
    assert_eq!(f.objects[0].key().namespace, None);
    assert_eq!(f.objects[0].metadata().namespace, None);
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(f.warnings[0].field.as_deref(), Some("metadata.namespace"));
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let d = only_error(&format!("{POOL_HEAD}spec:\n  blocks: [\n"));
    assert_eq!(d.document, 1);
    assert!(d.message.starts_with("invalid YAML: "), "{}", d.message);
    assert!(d.line.is_some());
    // A syntax error in a later document still reports the earlier documents' errors.
    let errs = errors("apiVersion: v1\nkind: Service\nmetadata:\n  name: Bad\n---\nkey: [unclosed\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!((errs[0].document, errs[1].document), (1, 2));
}

#[test]
fn empty_and_null_documents_are_skipped() {
    let f = parse("---\n# only a comment\n---\n").unwrap();
    assert!(f.objects.is_empty() && f.warnings.is_empty());
    let f = parse("").unwrap();
    assert!(f.objects.is_empty());
    let f = parse(&format!("---\n{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.0/24\n---\n...\n")).unwrap();
    assert_eq!(f.objects.len(), 1);
    assert_eq!(f.documents, [1]);
}

#[test]
fn non_mapping_documents_and_lists_are_errors() {
    let d = only_error("- a\n- b\n");
    assert!(d.message.starts_with("document is not a mapping"), "{}", d.message);
    let d = only_error("apiVersion: v1\nkind: List\nitems: []\n");
    assert!(d.message.contains("kind List is not supported"), "{}", d.message);
}

#[test]
fn json_files_parse_too() {
    let text = "{\n\t\"apiVersion\": \"cilium.io/v2\",\n\t\"kind\": \"CiliumLoadBalancerIPPool\",\n\t\"metadata\": {\"name\": \"j\"},\n\t\"spec\": {\"blocks\": [{\"cidr\": \"10.1.0.0/16\"}]}\n}\n";
    let f = parse_manifest(Path::new("pool.json"), text).unwrap();
    assert_eq!(f.objects[0].key().name, "j");
    let d = only_error(
        "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"s\"},\n \"spec\": {\"ports\": [{\"port\": 0}]}}",
    );
    assert_eq!(d.field.as_deref(), Some("spec.ports[0].port"));
    assert_eq!(d.line, Some(2));
}

#[test]
fn not_utf8_is_a_file_level_error() {
    let e = parse_manifest_bytes(Path::new("bad.yaml"), b"apiVersion: v1\nkind: \xff\n").unwrap_err();
    assert_eq!(e.diagnostics.len(), 1);
    assert_eq!(e.diagnostics[0].document, 0);
    assert!(e.diagnostics[0].message.contains("not valid UTF-8"));
    let e = parse_manifest_file(Path::new("/nonexistent/halyard/x.yaml")).unwrap_err();
    assert!(e.diagnostics[0].message.starts_with("cannot read file"));
}

#[test]
fn host_bits_are_a_warning_not_an_error() {
    let f = parse(&format!("{POOL_HEAD}spec:\n  blocks:\n  - cidr: 10.0.0.1/24\n")).unwrap();
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(f.warnings[0].field.as_deref(), Some("spec.blocks[0].cidr"));
    assert_eq!(f.warnings[0].message, "CIDR 10.0.0.1/24 has host bits set; using 10.0.0.0/24");
    let Object::CiliumLoadBalancerIPPool(p) = &f.objects[0] else { panic!() };
    assert_eq!(p.spec.blocks[0], IpBlock::Cidr("10.0.0.0/24".parse().unwrap()));
}

#[test]
fn bgp_semantic_checks() {
    let d = only_error(
        "apiVersion: cilium.io/v2\nkind: CiliumBGPPeerConfig\nmetadata:\n  name: p\nspec:\n  timers:\n    holdTimeSeconds: 9\n    keepAliveTimeSeconds: 30\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.timers.keepAliveTimeSeconds"));
    let d = only_error(
        "apiVersion: cilium.io/v2\nkind: CiliumBGPAdvertisement\nmetadata:\n  name: a\nspec:\n  advertisements:\n  - advertisementType: PodCIDR\n    attributes:\n      communities:\n        wellKnown: [no-export, no-such]\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.advertisements[0].attributes.communities.wellKnown[1]"));
    let d = only_error(
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata:\n  name: r\nspec:\n  virtualRouters:\n  - localASN: 64512\n    neighbors:\n    - peerAddress: 10.0.0.1/24\n      peerASN: 1\n",
    );
    assert!(d.message.contains("single host"), "{}", d.message);
    let d = only_error(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 1\n  peerASN: 2\n  peerAddress: 10.0.0.1\n  holdTime: 90\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.holdTime"));
    assert!(d.message.contains("duration"), "{}", d.message);
    let d = only_error(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 1\n  peerAddress: 10.0.0.1\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.peerASN"));
    let f = parse(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 1\n  peerASN: 2\n  peerAddress: 10.0.0.1\n  holdTime: 1m30s\n  password: hunter2\n",
    )
    .unwrap();
    let Object::BgpPeer(p) = &f.objects[0] else { panic!() };
    assert_eq!(p.spec.hold_time.map(|d| d.0.as_secs()), Some(90));
    // The model never prints a plain-text password.
    let json = serde_json::to_string(&f.objects[0]).unwrap();
    assert!(!json.contains("hunter2") && json.contains("<redacted>"), "{json}");
}

#[test]
fn yaml_merge_keys_are_applied() {
    // kubectl honours `<<: *anchor`; serde_yaml's typed deserializer alone does not.
    let text = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: &common
    app: web
spec:
  selector: *common
  ports:
  - &http
    name: http
    port: 80
    appProtocol: http
  - <<: *http
    name: alt
    port: 8080
";
    let f = parse(text).unwrap();
    assert!(f.warnings.is_empty(), "{:#?}", f.warnings);
    let Object::Service(s) = &f.objects[0] else { panic!() };
    assert_eq!(s.spec.selector["app"], "web");
    assert_eq!(s.spec.ports[1].name.as_deref(), Some("alt"));
    assert_eq!(s.spec.ports[1].port, 8080);
    assert_eq!(s.spec.ports[1].app_protocol.as_deref(), Some("http"));
    // Errors in such documents still name the field (without a line).
    let d = only_error(&text.replace("port: 8080", "port: 0"));
    assert_eq!(d.field.as_deref(), Some("spec.ports[1].port"));
}

#[test]
fn a_misspelt_required_field_is_explained_by_its_warning() {
    let e = parse(
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata:\n  name: r\nspec:\n  virtualRouters:\n  - localAsn: 64512\n    neighbors: []\n",
    )
    .unwrap_err();
    let d: Vec<_> = e.diagnostics.iter().map(|d| (d.severity, d.field.clone().unwrap_or_default())).collect();
    assert_eq!(
        d,
        [
            (Severity::Warning, "spec.virtualRouters[0].localAsn".to_string()),
            (Severity::Error, "spec.virtualRouters[0]".to_string())
        ]
    );
    assert!(e.diagnostics[1].message.contains("missing field `localASN`"), "{e}");
}
