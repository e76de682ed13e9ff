//! Label and field selectors as apimachinery parses and matches them (`pkg/labels`,
//! `pkg/fields`), plus the per-kind field labels kube-apiserver supports.
//!
//! Leaves out set-based field selectors (the real server has none either) and the `gt`/`lt`
//! label operators' use by nodeAffinity; `>`/`<` still parse and match numerically.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use crate::names;

/// A label selector operator (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else { return false };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan { v > bound } else { v < bound }
            }
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => ("==", 2),
                    ('!', Some('=')) => ("!=", 2),
                    ('=', _) => ("=", 1),
                    ('!', _) => ("!", 1),
                    ('<', _) => ("<", 1),
                    _ => (">", 1),
                };
                tokens.push(Token::Op(op));
                i += len;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"(),=!<>".contains(chars[i])
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    tokens
}

fn validate_label_key(key: &str) -> Result<(), String> {
    let errs = names::is_qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("key: Invalid value: {}: {}", names::quote(key), errs.join("; ")))
    }
}

fn validate_label_value(key: &str, value: &str) -> Result<(), String> {
    let errs = names::is_valid_label_value(value);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "values[0][{key}]: Invalid value: {}: {}",
            names::quote(value),
            errs.join("; ")
        ))
    }
}

impl LabelSelector {
    /// A selector that matches every object.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses the `labelSelector` query syntax (`k=v,k!=v,k,!k,k in (a,b),k notin (a,b)`).
    pub fn parse(input: &str) -> Result<LabelSelector, String> {
        let tokens = tokenize(input);
        let mut requirements = Vec::new();
        let mut pos = 0;
        let err = |what: &str| {
            format!("unable to parse requirement: {what} in selector {}", names::quote(input))
        };
        while pos < tokens.len() {
            // One requirement.
            let negated = tokens[pos] == Token::Op("!");
            if negated {
                pos += 1;
            }
            let Some(Token::Ident(key)) = tokens.get(pos) else {
                return Err(err("found unexpected token, expected a key"));
            };
            let key = key.clone();
            validate_label_key(&key)?;
            pos += 1;
            if negated {
                requirements.push(Requirement {
                    key,
                    operator: Operator::DoesNotExist,
                    values: vec![],
                });
            } else {
                match tokens.get(pos) {
                    None | Some(Token::Comma) => {
                        requirements.push(Requirement {
                            key,
                            operator: Operator::Exists,
                            values: vec![],
                        });
                    }
                    Some(Token::Op(op)) => {
                        let operator = match *op {
                            "=" | "==" => Operator::Equals,
                            "!=" => Operator::NotEquals,
                            ">" => Operator::GreaterThan,
                            "<" => Operator::LessThan,
                            _ => return Err(err("found '!', expected an operator")),
                        };
                        pos += 1;
                        let value = match tokens.get(pos) {
                            Some(Token::Ident(v)) => {
                                pos += 1;
                                v.clone()
                            }
                            // `k=` selects the empty value.
                            None | Some(Token::Comma) => String::new(),
                            _ => return Err(err("found unexpected token, expected a value")),
                        };
                        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
                            if value.parse::<i64>().is_err() {
                                return Err(format!(
                                    "for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                                ));
                            }
                        } else {
                            validate_label_value(&key, &value)?;
                        }
                        requirements.push(Requirement { key, operator, values: vec![value] });
                    }
                    Some(Token::Ident(word)) if word == "in" || word == "notin" => {
                        let operator = if word == "in" { Operator::In } else { Operator::NotIn };
                        pos += 1;
                        if tokens.get(pos) != Some(&Token::Open) {
                            return Err(err("found unexpected token, expected '('"));
                        }
                        pos += 1;
                        let mut values = Vec::new();
                        loop {
                            match tokens.get(pos) {
                                Some(Token::Ident(v)) => {
                                    validate_label_value(&key, v)?;
                                    values.push(v.clone());
                                    pos += 1;
                                    match tokens.get(pos) {
                                        Some(Token::Comma) => pos += 1,
                                        Some(Token::Close) => {
                                            pos += 1;
                                            break;
                                        }
                                        _ => {
                                            return Err(err(
                                                "found unexpected token, expected ',' or ')'",
                                            ));
                                        }
                                    }
                                }
                                // `k in ()` and `k in (a,)` allow empty values upstream.
                                Some(Token::Close) => {
                                    values.push(String::new());
                                    pos += 1;
                                    break;
                                }
                                Some(Token::Comma) => {
                                    values.push(String::new());
                                    pos += 1;
                                }
                                _ => return Err(err("found unexpected token, expected ')'")),
                            }
                        }
                        values.sort();
                        values.dedup();
                        requirements.push(Requirement { key, operator, values });
                    }
                    _ => return Err(err("found unexpected token, expected an operator")),
                }
            }
            match tokens.get(pos) {
                None => break,
                Some(Token::Comma) => {
                    pos += 1;
                    if pos == tokens.len() {
                        return Err(err("found end of input, expected a requirement"));
                    }
                }
                _ => return Err(err("found unexpected token, expected ','")),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Converts a `metav1.LabelSelector` (matchLabels + matchExpressions) as
    /// `metav1.LabelSelectorAsSelector` does; an empty selector matches everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            validate_label_key(key)?;
            validate_label_value(key, value)?;
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![value.clone()],
            });
        }
        for expr in selector.match_expressions.iter().flatten() {
            validate_label_key(&expr.key)?;
            let values = expr.values.clone().unwrap_or_default();
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!(
                        "{} is not a valid label selector operator",
                        names::quote(other)
                    ));
                }
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err("values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty".to_string());
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err("values: Invalid value: for 'exists', 'doesnotexist' operators, values set must be empty".to_string());
                }
                _ => {}
            }
            for value in &values {
                validate_label_value(&expr.key, value)?;
            }
            requirements.push(Requirement { key: expr.key.clone(), operator, values });
        }
        Ok(LabelSelector { requirements })
    }

    /// A selector from a plain map (Service `spec.selector`): every pair must match.
    pub fn from_map(map: &BTreeMap<String, String>) -> LabelSelector {
        LabelSelector {
            requirements: map
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    operator: Operator::Equals,
                    values: vec![v.clone()],
                })
                .collect(),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector; comma means AND. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Splits on unescaped `sep`, as `fields.splitTerms` does.
fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    out.push(current);
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(format!("invalid field selector: invalid escape sequence: \\{e}"));
                }
                None => {
                    return Err("invalid field selector: unterminated escape sequence".to_string());
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax (`a=b`, `a==b`, `a!=b`, comma = AND).
    pub fn parse(input: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for term in split_unescaped(input, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{input}'; can't understand '{term}'"));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                value: unescape(value.trim())?,
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Checks every field label against [`supported_fields`], with kube-apiserver's message
    /// (`field label not supported: foo`).
    pub fn check_supported(&self, kind: &str) -> Result<(), String> {
        let supported = supported_fields(kind);
        for requirement in &self.requirements {
            if !supported.contains(&requirement.field.as_str()) {
                return Err(format!("field label not supported: {}", requirement.field));
            }
        }
        Ok(())
    }

    /// Whether `obj` (of `kind`) satisfies every term. Unsupported fields never match.
    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.requirements.iter().all(|r| match field_value(kind, obj, &r.field) {
            Some(v) => (v == r.value) != r.negated,
            None => false,
        })
    }
}

/// The field labels kube-apiserver accepts per kind (`*ToSelectableFields` in `pkg/registry`).
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Service" => &["metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"],
        "Namespace" => &["metadata.name", "metadata.namespace", "status.phase"],
        "Node" => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        "Event" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            // events.k8s.io/v1 names for the same fields (`AddFieldLabelConversionsForEvent`).
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reportingController",
        ],
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        "ReplicaSet" => &["metadata.name", "metadata.namespace", "status.replicas"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

fn string_at(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The value of a field label, as the registry's selectable-fields function renders it.
fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    if !supported_fields(kind).contains(&field) {
        return None;
    }
    let value = match (kind, field) {
        ("Node", "spec.unschedulable") | ("Pod", "spec.hostNetwork") => {
            let pointer = format!("/{}", field.replace('.', "/"));
            obj.pointer(&pointer).and_then(Value::as_bool).unwrap_or(false).to_string()
        }
        ("Event", "source") => {
            let component = string_at(obj, "/source/component");
            if component.is_empty() {
                string_at(obj, "/deprecatedSource/component")
            } else {
                component
            }
        }
        ("Event", "reportingComponent" | "reportingController") => {
            let core = string_at(obj, "/reportingComponent");
            if core.is_empty() { string_at(obj, "/reportingController") } else { core }
        }
        ("Event", f) if f.starts_with("involvedObject.") || f.starts_with("regarding.") => {
            // Either API's object reference, whichever the stored Event carries.
            let (_, sub) = f.split_once('.').unwrap_or((f, ""));
            let core = string_at(obj, &format!("/involvedObject/{sub}"));
            if core.is_empty() { string_at(obj, &format!("/regarding/{sub}")) } else { core }
        }
        ("ReplicaSet", "status.replicas") => {
            obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0).to_string()
        }
        _ => string_at(obj, &format!("/{}", field.replace('.', "/"))),
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> BTreeMap<String, String> {
        s.split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                let (k, v) = t.split_once('=').unwrap_or((t, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn check(selector: &str, object_labels: &str, expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(
            parsed.matches(&labels(object_labels)),
            expected,
            "{selector} vs {object_labels}"
        );
    }

    #[test]
    fn label_selectors() {
        check("", "a=1", true);
        check("app=web", "app=web,tier=x", true);
        check("app==web", "app=web", true);
        check("app=web", "app=db", false);
        check("app!=web", "app=db", true);
        check("app!=web", "", true);
        check("app!=web", "app=web", false);
        check("app", "app=", true);
        check("app", "x=1", false);
        check("!app", "x=1", true);
        check("!app", "app=1", false);
        check("env in (prod, dev)", "env=dev", true);
        check("env in (prod,dev)", "env=qa", false);
        check("env notin (prod,dev)", "env=qa", true);
        check("env notin (prod,dev)", "", true);
        check("env notin (prod,dev)", "env=prod", false);
        check("app=web,env in (a),!legacy", "app=web,env=a", true);
        check("app=web, env in (a),!legacy", "app=web,env=a,legacy=1", false);
        check("kubernetes.io/service-name=web", "kubernetes.io/service-name=web", true);
        check("n>3", "n=4", true);
        check("n<3", "n=4", false);
        check("app=", "app=", true);
    }

    #[test]
    fn label_selector_errors() {
        for bad in [
            "app=web,",
            "in (a)x",
            "a b",
            "a in b",
            "bad key!=x",
            "a=b=c",
            "a=b c",
            "=x",
            "a in (x",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(LabelSelector::parse("a=-x").is_err());
    }

    #[test]
    fn from_k8s() {
        let sel: metav1::LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
        }))
        .unwrap();
        let sel = LabelSelector::from_k8s(&sel).unwrap();
        assert!(sel.matches(&labels("app=web,env=dev")));
        assert!(!sel.matches(&labels("app=web,env=prod")));
        assert!(
            LabelSelector::from_k8s(&metav1::LabelSelector::default())
                .unwrap()
                .matches(&labels(""))
        );
        let bad: metav1::LabelSelector = serde_json::from_value(
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
        )
        .unwrap();
        assert!(LabelSelector::from_k8s(&bad).is_err());
    }

    fn check_field(kind: &str, selector: &str, obj: Value, expected: bool) {
        let parsed = FieldSelector::parse(selector).unwrap();
        assert_eq!(parsed.check_supported(kind), Ok(()), "{selector}");
        assert_eq!(parsed.matches(kind, &obj), expected, "{selector}");
    }

    #[test]
    fn field_selectors() {
        use serde_json::json;
        let svc = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.1"}});
        check_field("Service", "metadata.name=web", svc.clone(), true);
        check_field("Service", "metadata.name==web,metadata.namespace=default", svc.clone(), true);
        check_field("Service", "metadata.name!=web", svc.clone(), false);
        check_field("Service", "spec.type=NodePort,spec.clusterIP=10.0.0.1", svc.clone(), true);
        let event = json!({"involvedObject": {"name": "web", "namespace": "default", "kind": "Service", "uid": "u1"},
                           "source": {"component": "svcnet-lb"}, "type": "Warning", "reason": "PoolExhausted"});
        check_field(
            "Event",
            "involvedObject.uid=u1,involvedObject.kind=Service,involvedObject.name=web,involvedObject.namespace=default",
            event.clone(),
            true,
        );
        check_field("Event", "source=svcnet-lb,type=Warning", event.clone(), true);
        check_field("Event", "involvedObject.name=other", event.clone(), false);
        check_field("Event", "regarding.name=web,regarding.kind=Service", event, true);
        let new_event = json!({"regarding": {"name": "web", "kind": "Service"}, "reportingController": "svcnet-lb", "type": "Normal"});
        check_field(
            "Event",
            "involvedObject.name=web,reportingController=svcnet-lb,reportingComponent=svcnet-lb",
            new_event,
            true,
        );
        check_field("Node", "spec.unschedulable=false", json!({"metadata": {"name": "n"}}), true);
        check_field("Pod", "spec.nodeName=", json!({"spec": {}}), true);
        check_field("Pod", "status.phase=Running", json!({"status": {"phase": "Running"}}), true);
        check_field(
            "Namespace",
            "status.phase=Active",
            json!({"status": {"phase": "Active"}}),
            true,
        );
        assert_eq!(
            FieldSelector::parse("foo=bar").unwrap().check_supported("Service"),
            Err("field label not supported: foo".to_string())
        );
        assert_eq!(
            FieldSelector::parse("foo").unwrap_err(),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\,b").unwrap().requirements[0].value,
            "a,b"
        );
    }
}
