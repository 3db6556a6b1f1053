//! Which fields travel as attachments: the builder's options checked against the compiled
//! descriptors, each problem named by file, field and reason.

use std::collections::{BTreeMap, HashSet};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

/// One attachment field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentField {
    /// Its full protobuf name, `package.Message.field`.
    pub full_name: String,
    /// Its Rust field name, as prost writes it (`r#type` for `type`).
    pub rust_name: String,
    /// It goes out of band when it holds at least this many bytes (and is not empty).
    pub min_len: usize,
    /// Its field number: attachments go in field-number order.
    pub number: i32,
}

/// The attachment fields of every message that has some, by the message's full name with a
/// leading dot (`.package.Message`, as method descriptors name types).
pub(crate) type Plan = BTreeMap<String, Vec<AttachmentField>>;

/// Why `field` cannot be an attachment field, if it cannot: it must be a singular `bytes`
/// field, which prost generates as `Bytes` (not `Option<Bytes>`, not a `Vec`, not in a
/// `oneof`'s enum).
fn unfit(field: &FieldDescriptorProto, proto3: bool) -> Option<String> {
    if field.r#type() != Type::Bytes {
        let ty = field.type_name.clone().unwrap_or_else(|| format!("{:?}", field.r#type()).to_lowercase());
        return Some(format!("it is `{}`, and only a `bytes` field can travel as an attachment", ty.trim_start_matches('.')));
    }
    if field.label() == Label::Repeated {
        return Some("it is `repeated`; an attachment field is a singular `bytes` field".into());
    }
    if field.proto3_optional() || (!proto3 && field.label() == Label::Optional) {
        return Some("it is `optional` (an `Option<Bytes>`); an attachment field is a plain `bytes` field".into());
    }
    if field.oneof_index.is_some() {
        return Some("it is in a `oneof`; an attachment field is a field of the message itself".into());
    }
    None
}

/// prost's Rust name for a field: snake case, keywords raw (`r#type`) or suffixed (`self_`).
pub(crate) fn rust_field_name(name: &str) -> String {
    use heck::ToSnakeCase;
    let snake = name.to_snake_case();
    match snake.as_str() {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if" | "impl" | "in"
        | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref" | "return" | "static" | "struct"
        | "trait" | "true" | "type" | "unsafe" | "use" | "where" | "while" | "dyn" | "abstract" | "become"
        | "box" | "do" | "final" | "macro" | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield"
        | "async" | "await" | "try" | "gen" => format!("r#{snake}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{snake}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{snake}"),
        _ => snake,
    }
}

/// Every message of the set: (file name, full name without leading dot, descriptor, proto3).
fn messages(fds: &FileDescriptorSet) -> Vec<(&str, String, &DescriptorProto, bool)> {
    fn walk<'a>(
        file: &'a str,
        prefix: &str,
        proto3: bool,
        list: &'a [DescriptorProto],
        out: &mut Vec<(&'a str, String, &'a DescriptorProto, bool)>,
    ) {
        for m in list {
            let name = if prefix.is_empty() { m.name().to_owned() } else { format!("{prefix}.{}", m.name()) };
            walk(file, &name, proto3, &m.nested_type, out);
            out.push((file, name, m, proto3));
        }
    }
    let mut out = Vec::new();
    for file in &fds.file {
        let proto3 = file.syntax() == "proto3";
        walk(file.name(), file.package(), proto3, &file.message_type, &mut out);
    }
    out
}

/// The attachment fields: those `named` (whatever their size) and, with `from`, every singular
/// `bytes` field from that size on. Returns every problem with the named fields.
pub(crate) fn plan(fds: &FileDescriptorSet, named: &[String], from: Option<usize>) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let mut found: HashSet<&str> = HashSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for path in named {
        if !seen.insert(path) {
            errors.push(format!("attachment `{path}` is named twice"));
        }
    }
    let mut plan = Plan::new();
    for (file, message, descriptor, proto3) in messages(fds) {
        let mut fields = Vec::new();
        for field in &descriptor.field {
            let full_name = format!("{message}.{}", field.name());
            let named = named.iter().find(|p| **p == full_name);
            let why = unfit(field, proto3);
            match (named, why) {
                (Some(path), Some(why)) => {
                    found.insert(path);
                    errors.push(format!("{file}: field `{full_name}` cannot be an attachment field: {why}"));
                }
                (Some(path), None) => {
                    found.insert(path);
                    fields.push((field, full_name, 0));
                }
                (None, None) if from.is_some() => fields.push((field, full_name, from.unwrap_or_default())),
                _ => {}
            }
        }
        if fields.is_empty() {
            continue;
        }
        let mut fields: Vec<AttachmentField> = fields
            .into_iter()
            .map(|(field, full_name, min_len)| AttachmentField {
                full_name,
                rust_name: rust_field_name(field.name()),
                min_len,
                number: field.number(),
            })
            .collect();
        fields.sort_by_key(|f| f.number);
        plan.insert(format!(".{message}"), fields);
    }
    for path in named {
        if !found.contains(path.as_str()) {
            errors.push(format!(
                "attachment `{path}`: no such field in the compiled .proto files (write \
                 `package.Message.field`, nested messages dotted)"
            ));
        }
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}
