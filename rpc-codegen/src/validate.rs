//! Checking a trait against the rules of a service and turning it into the model that
//! `codegen` reads.
//!
//! Every rule that fails adds a spanned error and checking goes on, so the user sees all the
//! problems of a trait in one build, each pointing at the code to change.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, ToTokens};
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    AngleBracketedGenericArguments, Attribute, FnArg, Ident, ItemTrait, Pat, ReturnType, Signature,
    Token, TraitItem, TraitItemFn, Type, TypeParamBound, Visibility,
};

use crate::errors::Errors;
use crate::method_id;
use crate::parse::{self, ExplicitId, Reply, StreamEnd, Value};

/// A checked service trait.
pub(crate) struct Service {
    /// The trait's attributes (docs, ...).
    pub(crate) attrs: Vec<Attribute>,
    /// The trait's visibility; the client and server get the same.
    pub(crate) vis: Visibility,
    /// The trait's name.
    pub(crate) ident: Ident,
    /// The trait's name as written (without `r#`).
    pub(crate) name: String,
    /// The qualified name the method paths start with, also `Service::name`: the name, after
    /// `{package}.` under `#[service(package = "...")]`.
    pub(crate) path: String,
    /// Supertraits the user wrote; `Send + Sync + 'static` are added to them.
    pub(crate) supertraits: Punctuated<TypeParamBound, Token![+]>,
    /// The methods, in declaration order.
    pub(crate) methods: Vec<Method>,
    /// The codec type (`#[service(codec = ...)]`); `None` is postcard.
    pub(crate) codec: Option<syn::Path>,
    /// The codec moves parts of a message out of band: values are encoded with
    /// `Encode::encode_body` and decoded with `Decode::decode_body`, so a message's attachment
    /// fields travel as the body's first attachments (the `.proto` front end's
    /// `rpc_core::codec::Protobuf`). `#[service]` leaves it off: its values are messages alone.
    pub(crate) body_codec: bool,
    /// A method returning `Result<T, rpc_core::Status>` answers `Err(status)` with that status
    /// itself, and its client returns `Result<T, CallError>` (the status as
    /// `CallError::Status`), as tonic does. The `.proto` front end's methods are all such;
    /// under `#[service]` an error type is the application's, encoded with the codec.
    pub(crate) status_errors: bool,
}

/// A checked service method.
pub(crate) struct Method {
    /// Attributes kept on the trait method and the client method (docs, ...).
    pub(crate) attrs: Vec<Attribute>,
    /// The method's name.
    pub(crate) ident: Ident,
    /// The method's name as written (without `r#`).
    pub(crate) name: String,
    /// `"{service path}/{name}"`: names the method in messages, hashed into the id.
    pub(crate) path: String,
    /// The wire id.
    pub(crate) id: u32,
    /// Where to point when the id collides: the `N` of `#[method(id = N)]`, else the name.
    pub(crate) id_span: Span,
    /// Whether the id was pinned with `#[method(id = N)]`.
    pub(crate) explicit_id: bool,
    /// The id constant on the client (`PUT`).
    pub(crate) const_ident: Ident,
    /// The path constant on the client (`PUT_PATH`).
    pub(crate) path_const_ident: Ident,
    /// The arguments after `&self`, in declaration order.
    pub(crate) args: Vec<Arg>,
    /// The return type and its shape.
    pub(crate) reply: Reply,
    /// The generic arguments of the method's `Sink` argument, if it has one: the server
    /// streams, and the client's `Source` gets the same arguments.
    pub(crate) sink: Option<AngleBracketedGenericArguments>,
    /// The generic arguments of the method's `Source` argument, if it has one: the client
    /// streams, and the client's `Sink` gets the same arguments.
    pub(crate) source: Option<AngleBracketedGenericArguments>,
}

impl Method {
    /// True for a unary method: no `Sink`, no `Source`.
    pub(crate) fn is_unary(&self) -> bool {
        self.sink.is_none() && self.source.is_none()
    }

    /// The server answers once (unary and client streaming): the client gets a
    /// `<name>_with_metadata` variant.
    pub(crate) fn answers_once(&self) -> bool {
        self.sink.is_none()
    }
}

/// One argument of a service method.
pub(crate) struct Arg {
    /// Its name.
    pub(crate) ident: Ident,
    /// Its type as written.
    pub(crate) ty: Type,
    /// How it travels.
    pub(crate) kind: ArgKind,
}

/// How an argument travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    /// Serialized with the codec, in the request's message.
    Value,
    /// An attachment (`Payload`) of the request.
    Payload,
    /// A stream end (`Sink` or `Source`): not in the request, but the call's stream.
    Stream(StreamEnd),
    /// The call's context (`CallContext`: metadata, peer, deadline), made by the server.
    Context,
}

/// Inherent items of the generated client that a method of the same name would collide with.
const CLIENT_ITEMS: &[&str] = &["new", "with_options", "client", "path_of"];
/// The client's constant listing every method as `(name, id)`; no method's id constant may
/// take its name.
const METHODS_CONST: &str = "METHODS";
/// The client's constant listing every method as `(path, id)`.
const PATHS_CONST: &str = "PATHS";

/// Checks `item` and builds the model, or returns every problem found.
/// `package` is the `#[service(package = "...")]` option, already checked; `postcard` is true
/// when the service has the default codec.
pub(crate) fn validate(item: &ItemTrait, package: Option<&str>, postcard: bool) -> syn::Result<Service> {
    let mut errors = Errors::default();

    if let Some(unsafety) = &item.unsafety {
        errors.at(unsafety, "a service trait cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.at(auto, "a service trait cannot be an `auto` trait");
    }
    if !item.generics.params.is_empty() {
        errors.at(&item.generics, "service traits cannot be generic");
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.at(where_clause, "service traits cannot have a `where` clause");
    }

    let name = item.ident.unraw().to_string();
    let path = method_id::service_path(package, &name);
    let mut methods = Vec::with_capacity(item.items.len());
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(m) = method(&path, f, postcard, &mut errors) {
                    methods.push(m);
                }
            }
            other => errors.at(
                other,
                "a service trait can only contain `async fn` methods (no consts, types or macros)",
            ),
        }
    }
    check_unique(&item.ident, &methods, &mut errors);

    errors.finish()?;
    Ok(Service {
        attrs: item.attrs.clone(),
        vis: item.vis.clone(),
        ident: item.ident.clone(),
        name,
        path,
        supertraits: item.supertraits.clone(),
        methods,
        codec: None,
        body_codec: false,
        status_errors: false,
    })
}

/// Checks one method of the service at `service_path`; `None` if it is too broken to model
/// (its errors are in `errors`). `postcard`: the service has the default codec.
fn method(service_path: &str, f: &TraitItemFn, postcard: bool, errors: &mut Errors) -> Option<Method> {
    let sig = &f.sig;
    let (attrs, explicit) = parse::method_attrs(&f.attrs, errors);

    if let Some(constness) = &sig.constness {
        errors.at(constness, "service methods cannot be `const`");
    }
    if sig.asyncness.is_none() {
        errors.at(sig.fn_token, "service methods must be `async fn`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(unsafety, "service methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, "service methods cannot have an `extern` ABI");
    }
    if !sig.generics.params.is_empty() {
        errors.at(&sig.generics, "service methods cannot be generic");
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.at(
            where_clause,
            "service methods cannot be generic (no `where` clause)",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(variadic, "service methods cannot be variadic");
    }
    if let Some(body) = &f.default {
        errors.at_span(
            body.span(),
            "service methods cannot have a default body: the trait only declares the service",
        );
    }

    check_receiver(sig, errors);
    let args = arguments(sig, errors);
    check_return(&sig.output, errors);
    let reply = Reply::of(&sig.output);
    check_nested_payloads(args.as_ref().map(|(a, _)| &a[..]).unwrap_or_default(), &reply, postcard, errors);
    let streams = args.as_ref().map(|(_, streams)| streams);
    if streams.is_some_and(|s| s.sink.is_some()) && !matches!(reply.ok, Value::Unit) {
        errors.at(
            &reply.ty,
            "a server-streaming method (one taking a `Sink`) returns `()` or `Result<(), E>`: \
             its items go into the `Sink`, and an `Err` ends the stream with that error",
        );
    }

    let name = sig.ident.unraw().to_string();
    let path = method_id::method_path(service_path, &name);
    let const_name = method_id::const_name(&name);
    let const_ident = format_ident!("{}", const_name, span = sig.ident.span());
    let path_const_ident = format_ident!("{}_PATH", const_name, span = sig.ident.span());
    let (id, id_span, explicit_id) = match explicit {
        Some(ExplicitId { value, span }) => (value, span, true),
        None => (method_id::hashed_id(&path), sig.ident.span(), false),
    };
    let (args, streams) = args?;
    Some(Method {
        attrs,
        ident: sig.ident.clone(),
        name,
        path,
        id,
        id_span,
        explicit_id,
        const_ident,
        path_const_ident,
        args,
        reply,
        sink: streams.sink,
        source: streams.source,
    })
}

/// The stream ends among a method's arguments: at most one of each.
#[derive(Default)]
struct Streams {
    sink: Option<AngleBracketedGenericArguments>,
    source: Option<AngleBracketedGenericArguments>,
}

/// The first input must be exactly `&self`.
fn check_receiver(sig: &Signature, errors: &mut Errors) {
    const CONCURRENT: &str = "the server calls methods concurrently";
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            let named_lifetime = r
                .reference
                .as_ref()
                .and_then(|(_, lt)| lt.as_ref())
                .is_some_and(|lt| lt.ident != "_");
            if r.reference.is_none() {
                errors.at(
                    r,
                    format!("service methods take `&self`, not `self` by value: {CONCURRENT}"),
                );
            } else if r.mutability.is_some() {
                errors.at(
                    r,
                    format!("service methods take `&self`, not `&mut self`: {CONCURRENT}"),
                );
            } else if r.colon_token.is_some() || named_lifetime {
                errors.at(r, "service methods take a plain `&self` receiver");
            }
        }
        Some(FnArg::Typed(first)) => errors.at(
            first,
            "service methods must take `&self` first: add `&self` before the arguments",
        ),
        None => errors.at_span(
            sig.paren_token.span.join(),
            "service methods must take `&self`: write `(&self)`",
        ),
    }
}

/// The typed arguments: each named by a plain identifier, each an owned, concrete type; at
/// most one `Sink` and one `Source`. `None` if any argument is unusable.
fn arguments(sig: &Signature, errors: &mut Errors) -> Option<(Vec<Arg>, Streams)> {
    let mut args = Vec::with_capacity(sig.inputs.len());
    let mut streams = Streams::default();
    let mut has_context = false;
    let mut ok = true;
    for input in &sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        let ident = match &*typed.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => {
                Some(p.ident.clone())
            }
            other => {
                errors.at(
                    other,
                    "name each argument with a plain identifier, like `key: String`",
                );
                None
            }
        };
        let ty_ok = check_owned_type(&typed.ty, "argument", errors);
        let kind = match parse::stream_end(&typed.ty) {
            None if parse::is_context(&typed.ty) => {
                if std::mem::replace(&mut has_context, true) {
                    errors.at(&typed.ty, "a second `CallContext`: a method takes its call's context at most once");
                    None
                } else {
                    Some(ArgKind::Context)
                }
            }
            None if parse::is_payload(&typed.ty) => Some(ArgKind::Payload),
            None => Some(ArgKind::Value),
            Some((end, generics)) => stream_arg(&typed.ty, end, generics, &mut streams, errors),
        };
        match (ident, kind) {
            (Some(ident), Some(kind)) if ty_ok => args.push(Arg {
                kind,
                ident,
                ty: (*typed.ty).clone(),
            }),
            _ => ok = false,
        }
    }
    ok.then_some((args, streams))
}

/// Records a `Sink` or `Source` argument of type `ty` in `streams`; `None` (and an error) if it
/// is malformed or the method already has that end.
fn stream_arg(
    ty: &Type,
    end: StreamEnd,
    generics: Option<AngleBracketedGenericArguments>,
    streams: &mut Streams,
    errors: &mut Errors,
) -> Option<ArgKind> {
    let name = end.name();
    let Some(generics) = generics else {
        errors.at(
            ty,
            format!("a stream argument is `{name}<Item>` or `{name}<Item, Codec>`"),
        );
        return None;
    };
    let slot = match end {
        StreamEnd::Sink => &mut streams.sink,
        StreamEnd::Source => &mut streams.source,
    };
    if slot.is_some() {
        let what = match end {
            StreamEnd::Sink => "its stream of answers",
            StreamEnd::Source => "its stream of requests",
        };
        errors.at(
            ty,
            format!(
                "a second `{name}`: a call has one stream each way, so a method takes at most \
                 one `{name}` ({what})"
            ),
        );
        return None;
    }
    *slot = Some(generics);
    Some(ArgKind::Stream(end))
}

/// A `Payload` is an attachment only as a whole argument or result. Inside another type
/// (`Vec<Payload>`, `Option<Payload>`, a stream's item) it would have to go through the codec,
/// which cannot encode it: without this check the user gets serde's advice to derive
/// `Serialize` for `Payload`. Checked where postcard encodes: the values of a service with the
/// default codec, and stream items without a codec of their own.
fn check_nested_payloads(args: &[Arg], reply: &Reply, postcard: bool, errors: &mut Errors) {
    const SEVERAL: &str = "take each `Payload` as an argument of its own (they travel as \
                           attachments, in order)";
    for arg in args {
        match arg.kind {
            ArgKind::Value if postcard => {
                if let Some(span) = find_ident(arg.ty.to_token_stream(), "Payload") {
                    errors.at_span(
                        span,
                        format!(
                            "a `Payload` inside an argument's type is not an attachment, and \
                             postcard cannot encode it: {SEVERAL}, or stream them with a \
                             `Source`"
                        ),
                    );
                }
            }
            ArgKind::Stream(end) => {
                let Type::Path(path) = &arg.ty else { continue };
                let Some(last) = path.path.segments.last() else { continue };
                let syn::PathArguments::AngleBracketed(generics) = &last.arguments else { continue };
                if generics.args.len() != 1 {
                    continue; // a codec of its own may carry anything
                }
                if let Some(span) = find_ident(generics.args.to_token_stream(), "Payload") {
                    let name = end.name();
                    errors.at_span(
                        span,
                        format!(
                            "a stream's item is encoded with postcard, which cannot encode a \
                             `Payload`: send the bytes as the item's attachments instead, \
                             `{name}<T>` with `send_with(item, vec![payload])` and \
                             `recv_with()` (`T` may be `()`)"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    if !postcard {
        return;
    }
    let ok = match &reply.ok {
        Value::Serde(ty) => Some(&**ty),
        _ => None,
    };
    for ty in ok.into_iter().chain(reply.err.as_ref()) {
        if let Some(span) = find_ident(ty.to_token_stream(), "Payload") {
            errors.at_span(
                span,
                "a `Payload` inside the return type is not an attachment, and postcard cannot \
                 encode it: return the `Payload` itself (or `Result<Payload, E>`), or stream \
                 several with a `Sink`",
            );
        }
    }
}

/// The span of the identifier `name` anywhere in `tokens`, if it is there.
fn find_ident(tokens: TokenStream, name: &str) -> Option<Span> {
    tokens.into_iter().find_map(|tt| match tt {
        TokenTree::Ident(i) if i == name => Some(i.span()),
        TokenTree::Group(g) => find_ident(g.stream(), name),
        _ => None,
    })
}

/// The return type must be owned and concrete, like the arguments.
fn check_return(output: &ReturnType, errors: &mut Errors) {
    if let ReturnType::Type(_, ty) = output {
        check_owned_type(ty, "return type", errors);
    }
}

/// Rejects `impl Trait` anywhere in the type, and a top-level reference: the receiving side
/// decodes into a fresh value of exactly this type. Returns true if the type is usable.
fn check_owned_type(ty: &Type, what: &str, errors: &mut Errors) -> bool {
    if let Some(span) = find_impl_keyword(ty.to_token_stream()) {
        errors.at_span(
            span,
            format!(
                "`impl Trait` is not allowed in a service method's {what}: use a concrete type, \
                 the other side decodes into it"
            ),
        );
        return false;
    }
    if let Type::Reference(r) = ty {
        errors.at(
            r,
            format!(
                "a service method's {what} must be an owned type, not a reference: \
                 it is decoded into a fresh value"
            ),
        );
        return false;
    }
    true
}

/// The span of an `impl` keyword inside a type's tokens, if any (that is an `impl Trait`).
fn find_impl_keyword(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().find_map(|tt| match tt {
        TokenTree::Ident(i) if i == "impl" => Some(i.span()),
        TokenTree::Group(g) => find_impl_keyword(g.stream()),
        _ => None,
    })
}

/// Method names, the client's constants (ids, paths) and ids must each be unique, and must
/// not take the names of the client's own items (nor of the generated `<name>_with_metadata`
/// variant of a method with one answer: unary or client streaming).
fn check_unique(service: &Ident, methods: &[Method], errors: &mut Errors) {
    let mut names: HashMap<&str, &Method> = HashMap::new();
    // Each constant's method, and whether it is a path constant (`PUT_PATH`) or an id one.
    let mut consts: HashMap<String, (&Method, bool)> = HashMap::new();
    let mut ids: HashMap<u32, &Method> = HashMap::new();
    for m in methods {
        if CLIENT_ITEMS.contains(&m.name.as_str()) {
            errors.at(
                &m.ident,
                format!(
                    "a method named `{0}` would clash with the generated `{service}Client::{0}`; \
                     rename it",
                    m.name
                ),
            );
        }
        if let Some(first) = names.insert(&m.name, m) {
            errors.at(
                &m.ident,
                format!(
                    "duplicate method `{}` (first declared as `{}`)",
                    m.name, first.ident
                ),
            );
            continue;
        }
        let const_name = m.const_ident.to_string();
        if const_name == METHODS_CONST || const_name == PATHS_CONST {
            errors.at(
                &m.ident,
                format!(
                    "method `{}` would name its id constant `{service}Client::{const_name}`, \
                     which lists all methods; rename it",
                    m.name
                ),
            );
        } else if let Some((first, first_is_path)) = consts.insert(const_name.clone(), (m, false)) {
            let message = if first_is_path {
                format!(
                    "the id constant of `{}` would be `{service}Client::{const_name}`, the path \
                     constant of `{}`; rename one",
                    m.name, first.name
                )
            } else {
                format!(
                    "methods `{}` and `{}` would both name the id constant \
                     `{service}Client::{const_name}`; rename one",
                    first.name, m.name
                )
            };
            errors.at(&m.ident, message);
        }
        let path_const = m.path_const_ident.to_string();
        if let Some((first, false)) = consts.insert(path_const.clone(), (m, true)) {
            errors.at(
                &m.ident,
                format!(
                    "the path constant of `{}` would be `{service}Client::{path_const}`, the id \
                     constant of `{}`; rename one",
                    m.name, first.name
                ),
            );
        }
        if let Some(first) = ids.insert(m.id, m) {
            let how = if m.explicit_id && first.explicit_id {
                "two methods cannot pin the same id"
            } else {
                "pin a different id on one of them with `#[method(id = N)]`"
            };
            errors.at_span(
                m.id_span,
                format!(
                    "method id {:#010x} of `{}` is already used by `{}`: {how}",
                    m.id, m.name, first.name
                ),
            );
        }
    }
    // Methods with one answer (unary, client streaming) get the variant.
    for m in methods.iter().filter(|m| m.answers_once()) {
        let variant = format!("{}_with_metadata", m.name);
        if let Some(other) = names.get(variant.as_str()) {
            errors.at(
                &other.ident,
                format!(
                    "a method named `{variant}` would clash with `{service}Client::{variant}`, the \
                     variant of `{}` that returns the response metadata; rename it",
                    m.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_may_not_take_the_name_of_a_metadata_variant() {
        let item: ItemTrait = syn::parse_quote! {
            pub trait Store {
                async fn get(&self, key: String) -> u32;
                async fn get_with_metadata(&self, key: String) -> u32;
            }
        };
        let e = validate(&item, None, true).err().expect("a clash").to_string();
        assert!(e.contains("`get_with_metadata` would clash with `StoreClient::get_with_metadata`"), "{e}");
        let fine: ItemTrait = syn::parse_quote! {
            pub trait Store {
                async fn get(&self, key: String) -> u32;
                async fn put(&self, key: String) -> u32;
            }
        };
        assert!(validate(&fine, None, true).is_ok());
    }
}
