//! Compile-time checks of `#[service]`: each misuse in `tests/ui/*.rs` must fail with the
//! message and span recorded in its `.stderr`; each file in `tests/ui/pass/` must compile.
//!
//! Regenerate the expectations with `TRYBUILD=overwrite cargo test -p rpc-core --test macro_ui`
//! and read the diff: the messages are part of the macro's interface.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
