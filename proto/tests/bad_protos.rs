//! A `.proto` the generator cannot map fails the build with every problem named: the file, the
//! field or method, and why.

use std::path::PathBuf;

/// Runs the generator on `proto` (in `tests/bad/`) with `attachments` named, into a scratch
/// directory; its error, as a build script would print it.
fn generate(proto: &str, attachments: &[&str]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bad_protos_{}", proto.replace('.', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let mut builder = zcrpc_codegen::proto::Builder::new().out_dir(&dir);
    for a in attachments {
        builder = builder.attachment(*a);
    }
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad");
    match builder.compile(&[format!("{here}/{proto}")], &[here]) {
        Ok(()) => panic!("{proto} generated without an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn attachment_options_on_fields_that_cannot_be_attachments() {
    let e = generate(
        "fields.proto",
        &["bad.Msg.count", "bad.Msg.many", "bad.Msg.maybe", "bad.Msg.either", "bad.Msg.fine", "bad.Msg.nothing", "bad.Nope.x"],
    );
    for expected in [
        "fields.proto: field `bad.Msg.count` cannot be an attachment field: it is `int32`, and only a `bytes` field can travel as an attachment",
        "fields.proto: field `bad.Msg.many` cannot be an attachment field: it is `repeated`",
        "fields.proto: field `bad.Msg.maybe` cannot be an attachment field: it is `optional`",
        "fields.proto: field `bad.Msg.either` cannot be an attachment field: it is in a `oneof`",
        "attachment `bad.Msg.nothing`: no such field",
        "attachment `bad.Nope.x`: no such field",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    assert!(!e.contains("bad.Msg.fine"), "a good field is not an error:\n{e}");
}

#[test]
fn an_attachment_named_twice_is_an_error() {
    let e = generate("fields.proto", &["bad.Msg.fine", "bad.Msg.fine"]);
    assert!(e.contains("attachment `bad.Msg.fine` is named twice"), "{e}");
}

#[test]
fn names_that_collide_in_the_generated_code() {
    let e = generate("names.proto", &[]);
    for expected in [
        "names.proto: service `bad.names.Store`: methods `GetBlob` and `get_blob` would both be the Rust method `get_blob`",
        "names.proto: service `bad.names.Shop`: a method named `new` would clash with the generated `ShopClient::new`",
        "names.proto: service `bad.names.Cart`: its generated `CartClient` would collide with the message or enum `CartClient` of package `bad.names`",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
}

#[test]
fn a_method_taking_or_returning_a_well_known_type_other_than_empty() {
    let e = generate("well_known.proto", &[]);
    let expected = "well_known.proto: method `bad.wkt.Clock/Now` takes or returns `google.protobuf.Timestamp`";
    assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    assert!(!e.contains("google.protobuf.Empty"), "Empty is `()`:\n{e}");
}
