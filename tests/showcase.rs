//! Checks the Terraform showcase in `terraform/` without AWS and without the
//! `terraform` binary: every file parses, inputs are typed and described, the
//! AWS provider is pinned, no security-group rule opens an admin port to the
//! world, every `templatefile()` names an existing template and passes every
//! variable that template uses, and the rendered Switchboard config has the
//! shape Switchboard reads.
//!
//! Invariants of the checker itself:
//! - A CIDR counts as "the world" when it is the literal `0.0.0.0/0` or `::/0`,
//!   directly, through `local.x`, or through `var.x`'s default. A variable
//!   without a default is the operator's input and is guarded by its own
//!   `validation` block (see `admin_cidr`).
//! - A port range that cannot be read (an expression, protocol `-1`) counts as
//!   every port: the checker fails closed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hcl::expr::{Expression, ObjectKey, Operation, TemplateExpr, TraversalOperator};
use hcl::structure::{Block, BlockLabel, Body};
use hcl::template::{Directive, Element, Template};

fn tf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform")
}

/// Every `.tf` file of the showcase, parsed. Panics naming the file that
/// does not parse.
fn tf_files() -> Vec<(String, Body)> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(tf_dir()).expect("terraform/ exists");
    for entry in entries {
        let path = entry.expect("readable dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("tf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable .tf file");
        let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        out.push((name, body));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The whole configuration as one body, as Terraform sees a module.
fn module() -> Body {
    parse_module(tf_files().into_iter().map(|(_, b)| b))
}

fn parse_module(bodies: impl IntoIterator<Item = Body>) -> Body {
    let mut all = Body::builder();
    for body in bodies {
        for structure in body.into_inner() {
            all = all.add_structure(structure);
        }
    }
    all.build()
}

fn label(block: &Block, i: usize) -> &str {
    match block.labels.get(i) {
        Some(BlockLabel::String(s)) => s,
        Some(BlockLabel::Identifier(id)) => id.as_str(),
        None => "",
    }
}

fn blocks<'a>(body: &'a Body, kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier.as_str() == kind)
}

fn resources<'a>(body: &'a Body, ty: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    blocks(body, "resource").filter(move |b| label(b, 0) == ty)
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key.as_str() == key).map(|a| &a.expr)
}

/// A string literal, or a quoted template without interpolation.
fn literal_str(e: &Expression) -> Option<String> {
    match e {
        Expression::String(s) => Some(s.clone()),
        Expression::TemplateExpr(t) => match t.as_ref() {
            TemplateExpr::QuotedString(s) if !s.contains("${") && !s.contains("%{") => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `var.name` / `local.name` as (root, name).
fn reference(e: &Expression) -> Option<(&str, &str)> {
    let Expression::Traversal(t) = e else {
        return None;
    };
    let Expression::Variable(root) = &t.expr else {
        return None;
    };
    match t.operators.as_slice() {
        [TraversalOperator::GetAttr(name)] => Some((root.as_str(), name.as_str())),
        _ => None,
    }
}

/// What `var.*` defaults and `local.*` values resolve to, where literal.
struct Scope {
    var_defaults: BTreeMap<String, Expression>,
    locals: BTreeMap<String, Expression>,
}

impl Scope {
    fn of(body: &Body) -> Scope {
        let mut var_defaults = BTreeMap::new();
        for v in blocks(body, "variable") {
            if let Some(d) = attr(&v.body, "default") {
                var_defaults.insert(label(v, 0).to_owned(), d.clone());
            }
        }
        let mut locals = BTreeMap::new();
        for l in blocks(body, "locals") {
            for a in l.body.attributes() {
                locals.insert(a.key.as_str().to_owned(), a.expr.clone());
            }
        }
        Scope { var_defaults, locals }
    }

    /// Follows `var.x` (to its default) and `local.x` until a non-reference.
    fn resolve<'a>(&'a self, mut e: &'a Expression) -> &'a Expression {
        for _ in 0..16 {
            let next = match reference(e) {
                Some(("var", name)) => self.var_defaults.get(name),
                Some(("local", name)) => self.locals.get(name),
                _ => None,
            };
            match next {
                Some(n) => e = n,
                None => break,
            }
        }
        e
    }

    /// Literal CIDRs an attribute names (a string or a list of strings).
    fn cidrs(&self, e: &Expression) -> Vec<String> {
        match self.resolve(e) {
            Expression::Array(items) => items.iter().flat_map(|i| self.cidrs(i)).collect(),
            other => literal_str(other).into_iter().collect(),
        }
    }

    fn number(&self, e: &Expression) -> Option<i64> {
        match self.resolve(e) {
            Expression::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    fn string(&self, e: &Expression) -> Option<String> {
        literal_str(self.resolve(e))
    }
}

const WORLD: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// Ports that must never be reachable from the internet.
const ADMIN_PORTS: &[(u16, &str)] = &[
    (22, "SSH"),
    (2181, "ZooKeeper"),
    (2379, "etcd client"),
    (2380, "etcd peer"),
    (5050, "Mesos master"),
    (5051, "Mesos agent"),
    (5432, "PostgreSQL"),
    (8001, "Kong Admin API"),
    (8444, "Kong Admin API (TLS)"),
    (8080, "Marathon"),
    (8181, "Vulcand HTTP listener"),
    (8182, "Vulcand API"),
    (8300, "Consul server RPC"),
    (8301, "Consul LAN gossip"),
    (8302, "Consul WAN gossip"),
    (8500, "Consul HTTP API"),
    (8501, "Consul HTTPS API"),
    (8600, "Consul DNS"),
    (9102, "Switchboard status"),
];

/// One ingress permission, wherever it was written.
#[derive(Debug)]
struct Ingress {
    origin: String,
    /// Inclusive port range; `None` means every port.
    ports: Option<(i64, i64)>,
    cidrs: Vec<String>,
}

impl Ingress {
    fn world_open(&self) -> bool {
        self.cidrs.iter().any(|c| WORLD.contains(&c.as_str()))
    }

    fn covers(&self, port: u16) -> bool {
        match self.ports {
            None => true,
            Some((from, to)) => from <= i64::from(port) && i64::from(port) <= to,
        }
    }
}

/// Port range of a rule given its protocol and from/to attributes. `None`
/// (every port) for protocol -1/all and for anything unreadable; ICMP rules
/// carry type/code, not ports, and open no TCP/UDP port.
fn port_range(scope: &Scope, body: &Body, protocol_key: &str) -> Option<Option<(i64, i64)>> {
    let protocol = attr(body, protocol_key).and_then(|e| scope.string(e));
    match protocol.as_deref() {
        Some("-1" | "all") => return Some(None),
        Some("icmp" | "icmpv6" | "1" | "58") => return None,
        _ => {}
    }
    let from = attr(body, "from_port").and_then(|e| scope.number(e));
    let to = attr(body, "to_port").and_then(|e| scope.number(e));
    Some(match (from, to) {
        (Some(f), Some(t)) if f >= 0 => Some((f, t)),
        _ => None,
    })
}

/// Every ingress permission of the module: standalone VPC rules, legacy
/// `aws_security_group_rule`s and inline `ingress` blocks.
fn ingress_rules(body: &Body) -> Vec<Ingress> {
    let scope = Scope::of(body);
    let mut out = Vec::new();
    for r in resources(body, "aws_vpc_security_group_ingress_rule") {
        if let Some(ports) = port_range(&scope, &r.body, "ip_protocol") {
            let cidrs = ["cidr_ipv4", "cidr_ipv6"]
                .iter()
                .filter_map(|k| attr(&r.body, k))
                .flat_map(|e| scope.cidrs(e))
                .collect();
            out.push(Ingress { origin: format!("aws_vpc_security_group_ingress_rule.{}", label(r, 1)), ports, cidrs });
        }
    }
    for r in resources(body, "aws_security_group_rule") {
        if attr(&r.body, "type").and_then(|e| scope.string(e)).as_deref() != Some("ingress") {
            continue;
        }
        if let Some(ports) = port_range(&scope, &r.body, "protocol") {
            let cidrs = ["cidr_blocks", "ipv6_cidr_blocks"]
                .iter()
                .filter_map(|k| attr(&r.body, k))
                .flat_map(|e| scope.cidrs(e))
                .collect();
            out.push(Ingress { origin: format!("aws_security_group_rule.{}", label(r, 1)), ports, cidrs });
        }
    }
    for sg in resources(body, "aws_security_group") {
        for (i, ing) in blocks(&sg.body, "ingress").enumerate() {
            if let Some(ports) = port_range(&scope, &ing.body, "protocol") {
                let cidrs = ["cidr_blocks", "ipv6_cidr_blocks"]
                    .iter()
                    .filter_map(|k| attr(&ing.body, k))
                    .flat_map(|e| scope.cidrs(e))
                    .collect();
                out.push(Ingress { origin: format!("aws_security_group.{} ingress #{i}", label(sg, 1)), ports, cidrs });
            }
        }
        assert!(
            attr(&sg.body, "ingress").is_none(),
            "aws_security_group.{}: write ingress as blocks or separate rules so it can be checked",
            label(sg, 1)
        );
    }
    out
}

/// Every admin port some rule opens to the world, as readable lines.
fn admin_ports_open_to_world(body: &Body) -> Vec<String> {
    let mut bad = Vec::new();
    for rule in ingress_rules(body).iter().filter(|r| r.world_open()) {
        for (port, what) in ADMIN_PORTS {
            if rule.covers(*port) {
                bad.push(format!("{} opens {port} ({what}) to {:?}", rule.origin, rule.cidrs));
            }
        }
    }
    bad
}

#[test]
fn every_tf_file_parses_and_concerns_are_split() {
    let files: BTreeSet<String> = tf_files().into_iter().map(|(name, _)| name).collect();
    for want in ["versions.tf", "variables.tf", "network.tf", "security.tf", "instances.tf", "outputs.tf"] {
        assert!(files.contains(want), "terraform/{want} missing; have {files:?}");
    }
}

#[test]
fn every_variable_has_a_type_and_a_description() {
    let body = module();
    let vars: Vec<&Block> = blocks(&body, "variable").collect();
    assert!(vars.len() >= 10, "expected the showcase's inputs, found {}", vars.len());
    for v in vars {
        let name = label(v, 0);
        assert!(attr(&v.body, "type").is_some(), "variable {name:?} has no type");
        let description = attr(&v.body, "description").and_then(literal_str);
        assert!(description.is_some_and(|d| d.trim().len() > 10), "variable {name:?} has no (useful) description");
    }
}

#[test]
fn documented_defaults_are_the_defaults() {
    let body = module();
    let scope = Scope::of(&body);
    let default = |name: &str| scope.var_defaults.get(name).and_then(literal_str);
    assert_eq!(default("region").as_deref(), Some("eu-west-1"));
    assert_eq!(default("public_subnet_cidr").as_deref(), Some("10.0.5.0/24"));
    assert_eq!(default("private_subnet_cidr").as_deref(), Some("10.0.12.0/24"));
    // SSH must be given a CIDR explicitly: no default that could be the world.
    assert!(!scope.var_defaults.contains_key("admin_cidr"), "admin_cidr must not have a default");
    for name in ["switchboard_deb_url", "availability_zone", "key_name", "public_key_path"] {
        assert!(blocks(&body, "variable").any(|v| label(v, 0) == name), "variable {name:?} missing");
    }
}

#[test]
fn aws_provider_is_pinned_to_5x_and_terraform_to_1_5() {
    let body = module();
    let terraform: Vec<&Block> = blocks(&body, "terraform").collect();
    assert_eq!(terraform.len(), 1, "exactly one terraform block");
    let tf = &terraform[0].body;
    let required_version = attr(tf, "required_version").and_then(literal_str).unwrap_or_default();
    assert!(required_version.contains("1.5"), "required_version {required_version:?} should demand >= 1.5");

    let providers = blocks(tf, "required_providers").next().expect("required_providers block");
    let Some(Expression::Object(aws)) = attr(&providers.body, "aws") else {
        panic!("required_providers.aws must be an object with source and version")
    };
    let field = |k: &str| {
        aws.iter().find_map(|(key, v)| match key {
            ObjectKey::Identifier(id) if id.as_str() == k => literal_str(v),
            ObjectKey::Expression(e) if literal_str(e).as_deref() == Some(k) => literal_str(v),
            _ => None,
        })
    };
    assert_eq!(field("source").as_deref(), Some("hashicorp/aws"));
    let version = field("version").unwrap_or_default();
    assert!(version.starts_with("~> 5."), "aws provider version {version:?} must be pinned to 5.x with ~> 5.N");
}

#[test]
fn no_admin_port_is_open_to_the_world() {
    let body = module();
    let bad = admin_ports_open_to_world(&body);
    assert!(bad.is_empty(), "admin ports open to the internet:\n{}", bad.join("\n"));
}

#[test]
fn only_kong_http_and_https_are_open_to_the_world() {
    let body = module();
    let rules = ingress_rules(&body);
    assert!(!rules.is_empty(), "no ingress rules found: the checker is looking in the wrong place");
    let open: BTreeSet<(i64, i64)> =
        rules.iter().filter(|r| r.world_open()).map(|r| r.ports.unwrap_or((0, 65535))).collect();
    assert_eq!(open, BTreeSet::from([(80, 80), (443, 443)]), "ports open to the world");
    // SSH exists, and only from the admin CIDR.
    let ssh: Vec<&Ingress> = rules.iter().filter(|r| r.covers(22)).collect();
    assert!(ssh.iter().any(|r| r.ports == Some((22, 22))), "no SSH rule for the operator: {ssh:?}");
}

#[test]
fn the_checker_catches_world_open_admin_ports() {
    // Written three ways, each must be flagged; the harmless one must not.
    let bad = r#"
        variable "ssh_from" {
          type    = string
          default = "0.0.0.0/0"
        }
        resource "aws_security_group" "a" {
          ingress {
            protocol    = "tcp"
            from_port   = 8000
            to_port     = 8600
            cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]
          }
        }
        resource "aws_security_group_rule" "b" {
          type             = "ingress"
          protocol         = "-1"
          from_port        = 0
          to_port          = 0
          ipv6_cidr_blocks = ["::/0"]
        }
        resource "aws_vpc_security_group_ingress_rule" "c" {
          ip_protocol = "tcp"
          from_port   = 22
          to_port     = 22
          cidr_ipv4   = var.ssh_from
        }
        resource "aws_vpc_security_group_ingress_rule" "fine" {
          ip_protocol = "tcp"
          from_port   = 443
          to_port     = 443
          cidr_ipv4   = "0.0.0.0/0"
        }
    "#;
    let body = hcl::parse(bad).expect("fixture parses");
    let found = admin_ports_open_to_world(&body);
    let origins: BTreeSet<&str> = found.iter().map(|l| l.split(" opens ").next().unwrap_or_default()).collect();
    assert_eq!(
        origins,
        BTreeSet::from([
            "aws_security_group.a ingress #0",
            "aws_security_group_rule.b",
            "aws_vpc_security_group_ingress_rule.c",
        ]),
        "{found:#?}"
    );
    assert!(found.iter().any(|l| l.contains("8500 (Consul HTTP API)")), "{found:#?}");
}

#[test]
fn no_deprecated_aws_resources() {
    let body = module();
    for eip in resources(&body, "aws_eip") {
        assert!(attr(&eip.body, "vpc").is_none(), "aws_eip.{}: `vpc = true` is deprecated, use domain", label(eip, 1));
        assert_eq!(
            attr(&eip.body, "domain").and_then(literal_str).as_deref(),
            Some("vpc"),
            "aws_eip.{} needs domain = \"vpc\"",
            label(eip, 1)
        );
    }
    let deprecated = [
        "aws_db_security_group",
        "aws_elasticache_security_group",
        "aws_redshift_security_group",
        "aws_s3_bucket_object",
        "aws_launch_configuration",
    ];
    for r in blocks(&body, "resource") {
        assert!(!deprecated.contains(&label(r, 0)), "deprecated resource {}.{}", label(r, 0), label(r, 1));
    }
    for sg in resources(&body, "aws_security_group") {
        assert!(attr(&sg.body, "vpc_id").is_some(), "aws_security_group.{} outside the VPC", label(sg, 1));
    }
}

/// Variables a template reads: roots of every expression outside the names
/// its own `for` directives bind.
fn template_free_vars(t: &Template, bound: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    for el in t.elements() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => expr_free_vars(&i.expr, bound, out),
            Element::Directive(Directive::If(d)) => {
                expr_free_vars(&d.cond_expr, bound, out);
                template_free_vars(&d.true_template, bound, out);
                if let Some(f) = &d.false_template {
                    template_free_vars(f, bound, out);
                }
            }
            Element::Directive(Directive::For(d)) => {
                expr_free_vars(&d.collection_expr, bound, out);
                let mut inner = bound.clone();
                inner.insert(d.value_var.as_str().to_owned());
                if let Some(k) = &d.key_var {
                    inner.insert(k.as_str().to_owned());
                }
                template_free_vars(&d.template, &inner, out);
            }
        }
    }
}

fn expr_free_vars(e: &Expression, bound: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    match e {
        Expression::Variable(v) if !bound.contains(v.as_str()) => {
            out.insert(v.as_str().to_owned());
        }
        Expression::Traversal(t) => {
            expr_free_vars(&t.expr, bound, out);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    expr_free_vars(i, bound, out);
                }
            }
        }
        Expression::FuncCall(f) => f.args.iter().for_each(|a| expr_free_vars(a, bound, out)),
        Expression::Array(items) => items.iter().for_each(|a| expr_free_vars(a, bound, out)),
        Expression::Object(o) => o.iter().for_each(|(k, v)| {
            if let ObjectKey::Expression(k) = k {
                expr_free_vars(k, bound, out);
            }
            expr_free_vars(v, bound, out);
        }),
        Expression::Parenthesis(p) => expr_free_vars(p, bound, out),
        Expression::Conditional(c) => {
            expr_free_vars(&c.cond_expr, bound, out);
            expr_free_vars(&c.true_expr, bound, out);
            expr_free_vars(&c.false_expr, bound, out);
        }
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(u) => expr_free_vars(&u.expr, bound, out),
            Operation::Binary(b) => {
                expr_free_vars(&b.lhs_expr, bound, out);
                expr_free_vars(&b.rhs_expr, bound, out);
            }
        },
        Expression::ForExpr(f) => {
            expr_free_vars(&f.collection_expr, bound, out);
            let mut inner = bound.clone();
            inner.insert(f.value_var.as_str().to_owned());
            if let Some(k) = &f.key_var {
                inner.insert(k.as_str().to_owned());
            }
            if let Some(k) = &f.key_expr {
                expr_free_vars(k, &inner, out);
            }
            expr_free_vars(&f.value_expr, &inner, out);
            if let Some(c) = &f.cond_expr {
                expr_free_vars(c, &inner, out);
            }
        }
        Expression::TemplateExpr(t) => {
            if let Ok(tpl) = Template::from_expr(t) {
                template_free_vars(&tpl, bound, out);
            }
        }
        _ => {}
    }
}

/// Every `templatefile(path, vars)` call in an expression tree.
fn templatefile_calls<'a>(e: &'a Expression, out: &mut Vec<&'a [Expression]>) {
    match e {
        Expression::FuncCall(f) => {
            if f.name.name.as_str() == "templatefile" {
                out.push(&f.args);
            }
            f.args.iter().for_each(|a| templatefile_calls(a, out));
        }
        Expression::Array(items) => items.iter().for_each(|a| templatefile_calls(a, out)),
        Expression::Object(o) => o.values().for_each(|v| templatefile_calls(v, out)),
        Expression::Parenthesis(p) => templatefile_calls(p, out),
        Expression::Conditional(c) => {
            templatefile_calls(&c.true_expr, out);
            templatefile_calls(&c.false_expr, out);
        }
        _ => {}
    }
}

fn body_templatefile_calls<'a>(body: &'a Body, out: &mut Vec<&'a [Expression]>) {
    for a in body.attributes() {
        templatefile_calls(&a.expr, out);
    }
    for b in body.blocks() {
        body_templatefile_calls(&b.body, out);
    }
}

/// Keys of a `templatefile` vars argument: an object literal, or `merge()`
/// of object literals and locals. `None` when it cannot be read statically.
fn object_keys(scope: &Scope, e: &Expression) -> Option<BTreeSet<String>> {
    match scope.resolve(e) {
        Expression::Object(o) => Some(
            o.keys()
                .filter_map(|k| match k {
                    ObjectKey::Identifier(id) => Some(id.as_str().to_owned()),
                    ObjectKey::Expression(e) => literal_str(e),
                    _ => None,
                })
                .collect(),
        ),
        Expression::FuncCall(f) if f.name.name.as_str() == "merge" => {
            let mut keys = BTreeSet::new();
            for a in &f.args {
                keys.extend(object_keys(scope, a)?);
            }
            Some(keys)
        }
        _ => None,
    }
}

/// `"${path.module}/templates/x"` → the file in `terraform/`.
fn template_path(e: &Expression) -> PathBuf {
    let raw = match e {
        Expression::TemplateExpr(t) => match t.as_ref() {
            TemplateExpr::QuotedString(s) => s.clone(),
            TemplateExpr::Heredoc(h) => h.template.clone(),
        },
        other => literal_str(other).unwrap_or_else(|| panic!("templatefile path is not a string: {other:?}")),
    };
    let relative = raw.replace("${path.module}", ".");
    assert!(!relative.contains("${"), "templatefile path {raw:?} depends on more than path.module");
    tf_dir().join(relative)
}

#[test]
fn every_templatefile_exists_and_gets_every_variable_it_uses() {
    let body = module();
    let scope = Scope::of(&body);
    let mut calls = Vec::new();
    body_templatefile_calls(&body, &mut calls);
    assert!(
        calls.len() >= 6,
        "expected templatefile() for each host and the Switchboard config, found {}",
        calls.len()
    );
    let mut seen = BTreeSet::new();
    for args in calls {
        let [path, vars] = args else { panic!("templatefile takes (path, vars), got {} args", args.len()) };
        let path = template_path(path);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let template: Template =
            text.parse().unwrap_or_else(|e| panic!("{} is not a valid template: {e}", path.display()));
        let mut used = BTreeSet::new();
        template_free_vars(&template, &BTreeSet::new(), &mut used);
        let given =
            object_keys(&scope, vars).unwrap_or_else(|| panic!("{}: vars are not a readable object", path.display()));
        let missing: Vec<&String> = used.difference(&given).collect();
        assert!(missing.is_empty(), "{} uses {missing:?} but templatefile() does not pass them", path.display());
        seen.insert(path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned());
    }
    assert!(
        seen.contains("switchboard.toml.tftpl"),
        "Switchboard's config is not rendered by templatefile(): {seen:?}"
    );
}

/// Renders a template that only uses plain `${name}` interpolations.
fn render_simple(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(!out.contains("${") && !out.contains("%{"), "template left unrendered parts:\n{out}");
    out
}

fn rendered_switchboard_toml() -> toml::Table {
    let path = tf_dir().join("templates/switchboard.toml.tftpl");
    let text = std::fs::read_to_string(&path).expect("switchboard.toml.tftpl exists");
    // The sample values cover exactly what the template reads, so the plain
    // substitution below renders what templatefile() would.
    let template: Template = text.parse().expect("switchboard.toml.tftpl is a valid template");
    let mut used = BTreeSet::new();
    template_free_vars(&template, &BTreeSet::new(), &mut used);
    let sample: BTreeSet<String> = common::sample_config_vars().keys().map(|k| k.to_string()).collect();
    assert_eq!(used, sample, "sample values out of step with the template");
    let rendered = render_simple(&text, &common::sample_config_vars());
    rendered.parse::<toml::Table>().unwrap_or_else(|e| panic!("rendered config is not TOML: {e}\n{rendered}"))
}

#[test]
fn rendered_switchboard_config_has_the_forwarding_topology_and_static_uis() {
    let cfg = rendered_switchboard_toml();
    let known = [
        "marathon",
        "consul",
        "kong",
        "vulcand",
        "data_dir",
        "resync_interval",
        "listen",
        "cluster",
        "name_separator",
        "grace_period",
        "idle_timeout",
        "kong_forward_to",
        "kong_token_header",
        "vulcand_server_ttl",
        "ha",
        "ha_session_ttl",
        "ha_lock_delay",
        "static",
    ];
    for key in cfg.keys() {
        assert!(known.contains(&key.as_str()), "unknown top-level key {key:?} in switchboard.toml");
        assert!(!key.contains("token") || key == "kong_token_header", "secret {key:?} in the TOML");
    }
    let s = |k: &str| cfg.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    assert_eq!(s("kong_forward_to"), "http://10.0.12.30:8181", "Kong must forward to Vulcand's listener");
    assert_eq!(s("vulcand"), "http://10.0.12.30:8182");
    assert_eq!(s("kong"), "https://10.0.5.10:8444", "Kong's Admin API over TLS");
    assert!(s("data_dir").starts_with("/var/lib/switchboard"));
    assert!(s("listen").starts_with("127.0.0.1:"), "status port stays on loopback");

    let statics = cfg.get("static").and_then(|v| v.as_array()).expect("[[static]] services");
    let mut hosts = BTreeMap::new();
    for st in statics {
        let name = st.get("name").and_then(|v| v.as_str()).expect("static name").to_owned();
        let labels = st.get("labels").and_then(|v| v.as_table()).expect("static labels");
        let kong = labels.get("kong.hosts").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        assert!(labels.contains_key("vulcand.host"), "{name}: Kong forwards to Vulcand, which needs a route too");
        hosts.insert(name, kong);
    }
    assert_eq!(hosts.get("marathon").map(String::as_str), Some("marathon.switchboard.test"));
    assert_eq!(hosts.get("mesos").map(String::as_str), Some("mesos.switchboard.test"));
}

#[test]
fn switchboard_is_installed_from_its_debian_package_with_the_repository_unit() {
    let text =
        std::fs::read_to_string(tf_dir().join("templates/switchboard.yaml.tftpl")).expect("switchboard host template");
    for want in [
        "${switchboard_deb_url}",
        "sha256sum -c",
        "apt-get install -y \"$tmp/switchboard.deb\"",
        "systemctl enable --now switchboard",
        // A drop-in on the package's unit, not a unit of its own.
        "- path: /etc/systemd/system/switchboard.service.d/showcase.conf",
        "ExecStart=\n",
        "ExecStart=/usr/bin/switchboard run --config /etc/switchboard/switchboard.toml",
    ] {
        assert!(text.contains(want), "switchboard.yaml.tftpl lacks {want:?}");
    }
    assert!(!text.contains("/etc/systemd/system/switchboard.service\n"), "the showcase must not ship a second unit");
    assert!(
        !text.contains("[Install]") && !text.contains("Type="),
        "the unit's settings come from dist/switchboard.service"
    );
    // The unit the package installs (Cargo.toml [package.metadata.deb]).
    let unit = std::fs::read_to_string(tf_dir().join("../dist/switchboard.service")).expect("dist/switchboard.service");
    for want in [
        "Type=notify",
        "ExecStart=/usr/bin/switchboard run --config /etc/switchboard/switchboard.toml",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/switchboard/switchboard.env",
        "StateDirectory=switchboard",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(want), "dist/switchboard.service lacks {want:?}");
    }
    let cargo = std::fs::read_to_string(tf_dir().join("../Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("unit-scripts = \"dist\""), "the Debian package installs dist/switchboard.service");
    // The env file entry is root:root 0600.
    let entry =
        text.split("- path: ").find(|e| e.starts_with("/etc/switchboard/switchboard.env")).expect("env file entry");
    assert!(entry.contains("permissions: \"0600\"") && entry.contains("owner: root:root"), "{entry}");
    // No build on the host.
    assert!(!text.contains("cargo "), "Switchboard must not be compiled on the host");
}

#[test]
fn only_kongs_host_has_a_public_address() {
    // checkov's CKV_AWS_88 is skipped for Kong (terraform/.checkov.yaml): keep it to Kong.
    let body = module();
    let public: Vec<&str> = resources(&body, "aws_instance")
        .filter(|r| matches!(attr(&r.body, "associate_public_ip_address"), Some(Expression::Bool(true))))
        .map(|r| label(r, 1))
        .collect();
    assert_eq!(public, ["kong"]);
    // `aws_instance.kong.id`: the only Elastic IP bound to an instance is Kong's.
    let eips: Vec<Vec<String>> = resources(&body, "aws_eip")
        .filter_map(|r| match attr(&r.body, "instance") {
            Some(Expression::Traversal(t)) => {
                let mut path = vec![match &t.expr {
                    Expression::Variable(v) => v.as_str().to_owned(),
                    _ => String::new(),
                }];
                path.extend(t.operators.iter().filter_map(|op| match op {
                    TraversalOperator::GetAttr(name) => Some(name.as_str().to_owned()),
                    _ => None,
                }));
                Some(path)
            }
            _ => None,
        })
        .collect();
    assert_eq!(eips, [["aws_instance", "kong", "id"]], "one Elastic IP on an instance, Kong's");
}

#[test]
fn two_switchboard_replicas_run_with_ha_on_the_local_agent_over_tls() {
    let body = module();
    let scope = Scope::of(&body);
    // Two replica hosts by default, each its own instance with a Consul agent.
    let sb: Vec<&Block> = resources(&body, "aws_instance").filter(|r| label(r, 1) == "switchboard").collect();
    assert_eq!(sb.len(), 1, "one aws_instance.switchboard with a count");
    let count = attr(&sb[0].body, "count").and_then(|c| scope.number(c));
    assert_eq!(count, Some(2), "two Switchboard replicas by default");
    let master = std::fs::read_to_string(tf_dir().join("templates/master.yaml.tftpl")).expect("master template");
    assert!(!master.contains("switchboard run"), "Switchboard runs on its replica hosts, not on the master");

    // Every replica: ha = true, the lock on the local agent over HTTPS, and
    // timings whose kill -9 takeover (2 x TTL + lock delay) stays within 45 s.
    let cfg = rendered_switchboard_toml();
    assert_eq!(cfg.get("ha").and_then(|v| v.as_bool()), Some(true));
    let s = |k: &str| cfg.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    assert_eq!(s("consul"), "https://127.0.0.1:8501", "the local agent's HTTPS API holds the lock");
    let dur = |k: &str| humantime::parse_duration(&s(k)).unwrap_or_else(|e| panic!("{k}: {e}"));
    assert!(2 * dur("ha_session_ttl") + dur("ha_lock_delay") <= std::time::Duration::from_secs(40));

    // The drop-in: each replica named, TLS files and per-host agents as flags.
    let unit = std::fs::read_to_string(tf_dir().join("templates/switchboard.yaml.tftpl")).expect("replica template");
    for want in [
        "--replica-name ${replica_name}",
        "--consul-ca-file /etc/switchboard/tls/ca.pem",
        "--kong-ca-file /etc/switchboard/tls/ca.pem",
        "--tls-cert-file /etc/switchboard/tls/switchboard.pem",
        "--tls-key-file /etc/switchboard/tls/switchboard-key.pem",
        "--consul-agent-mode per-host",
        "--consul-agent-scheme https",
        "--consul-agent-port 8501",
    ] {
        assert!(unit.contains(want), "switchboard.yaml.tftpl lacks {want:?}");
    }
    let key = unit
        .split("- path: ")
        .find(|e| e.starts_with("/etc/switchboard/tls/switchboard-key.pem"))
        .expect("client key entry");
    assert!(key.contains("permissions: \"0640\""), "{key}");

    // Every Consul agent serves HTTPS with mutual TLS; plain HTTP on loopback only.
    let common = std::fs::read_to_string(tf_dir().join("templates/common.sh.tftpl")).expect("common.sh");
    for want in ["https = 8501", "verify_incoming = true", "http = \"127.0.0.1\"", "${tls_cert_pem}", "${tls_ca_pem}"] {
        assert!(common.contains(want), "common.sh.tftpl lacks {want:?}");
    }
    let kong = std::fs::read_to_string(tf_dir().join("templates/kong.yaml.tftpl")).expect("kong template");
    assert!(kong.contains("KONG_ADMIN_LISTEN=\"0.0.0.0:8444 ssl\"") && !kong.contains(":8001:8001"), "{kong}");

    // The CA comes from the pinned hashicorp/tls provider.
    let terraform = blocks(&body, "terraform").next().expect("terraform block");
    let providers = blocks(&terraform.body, "required_providers").next().expect("required_providers");
    assert!(attr(&providers.body, "tls").is_some(), "hashicorp/tls is not pinned");
    assert!(resources(&body, "tls_self_signed_cert").count() == 1, "one showcase CA");
}
