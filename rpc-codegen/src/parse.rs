//! Reading the syntax: the attribute's own arguments, `#[method(...)]`, and the shapes of
//! argument and return types (attachment, `Result`, unit, serialized value).
//!
//! Nothing here decides whether a trait is a valid service; `validate` does that.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, GenericArgument, LitInt, PathArguments, ReturnType, Token, Type};

/// The arguments of `#[service(...)]`: `codec = <path>` (default `::rpc_core::codec::Postcard`)
/// and `package = "<dotted.name>"`, in any order. Anything else is an error, so options can be
/// added later without silently ignoring a typo.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    /// The codec type of the typed part of calls, if given.
    pub(crate) codec: Option<syn::Path>,
    /// The package the service's paths start with, if given (checked: dotted identifiers).
    pub(crate) package: Option<String>,
}

/// What `#[service]` accepts, for error messages.
const OPTIONS: &str = "`codec = <type>` and `package = \"<name>\"`";

impl Parse for ServiceArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = ServiceArgs::default();
        while !input.is_empty() {
            let key: syn::Ident = input.parse().map_err(|e| {
                syn::Error::new(e.span(), format!("`#[service]` takes only {OPTIONS}"))
            })?;
            let twice = || syn::Error::new(key.span(), format!("`{key}` given twice"));
            if key == "codec" {
                if args.codec.is_some() {
                    return Err(twice());
                }
                input.parse::<Token![=]>()?;
                args.codec = Some(input.parse()?);
            } else if key == "package" {
                if args.package.is_some() {
                    return Err(twice());
                }
                input.parse::<Token![=]>()?;
                let lit: syn::LitStr = input.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "write the package as a string: `package = \"store.v1\"`",
                    )
                })?;
                let package = lit.value();
                crate::method_id::check_package(&package)
                    .map_err(|why| syn::Error::new(lit.span(), format!("bad `package`: {why}")))?;
                args.package = Some(package);
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown `#[service]` option `{key}`; the options are {OPTIONS}"),
                ));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Parses the arguments of `#[service(...)]`.
pub(crate) fn service_args(args: TokenStream) -> syn::Result<ServiceArgs> {
    syn::parse2(args)
}

/// An explicit id from `#[method(id = N)]`, with the span to blame if it collides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExplicitId {
    /// The id.
    pub(crate) value: u32,
    /// Where the user wrote it.
    pub(crate) span: Span,
}

/// The contents of one `#[method(...)]`: `id = <u32 literal>`.
struct MethodArgs {
    id: ExplicitId,
}

impl Parse for MethodArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: syn::Ident = input.parse()?;
        if key != "id" {
            return Err(syn::Error::new(
                key.span(),
                format!("unknown `#[method]` option `{key}`; the only option is `id = N`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let lit: LitInt = input.parse()?;
        let value = lit.base10_parse::<u32>().map_err(|_| {
            syn::Error::new(
                lit.span(),
                "a method id must be an integer that fits in a `u32`",
            )
        })?;
        if !input.is_empty() {
            return Err(input.error("expected only `id = N` in `#[method(...)]`"));
        }
        Ok(MethodArgs {
            id: ExplicitId {
                value,
                span: lit.span(),
            },
        })
    }
}

/// Splits a method's attributes into those kept on the generated items (docs, lints, ...)
/// and the `#[method(...)]` ones, which the macro consumes.
///
/// Returns the kept attributes and the explicit id, if any; malformed or repeated
/// `#[method]` attributes are reported through `errors`.
pub(crate) fn method_attrs(
    attrs: &[Attribute],
    errors: &mut crate::errors::Errors,
) -> (Vec<Attribute>, Option<ExplicitId>) {
    let mut kept = Vec::with_capacity(attrs.len());
    let mut id: Option<ExplicitId> = None;
    for attr in attrs {
        if !attr.path().is_ident("method") {
            kept.push(attr.clone());
            continue;
        }
        match attr.parse_args::<MethodArgs>() {
            Ok(_) if id.is_some() => {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "duplicate `#[method]` attribute",
                ));
            }
            Ok(args) => id = Some(args.id),
            Err(e) => errors.push(e),
        }
    }
    (kept, id)
}

/// Removes `#[method(...)]` attributes so the trait can be emitted unchanged otherwise.
pub(crate) fn strip_method_attrs(attrs: &mut Vec<Attribute>) {
    attrs.retain(|a| !a.path().is_ident("method"));
}

/// Sees through the invisible groups `macro_rules!` wraps around types, and parentheses.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => peel(&g.elem),
        Type::Paren(p) => peel(&p.elem),
        other => other,
    }
}

/// True when the type is an attachment: a path whose last segment is `Payload` with no
/// generic arguments (`Payload`, `rpc_core::Payload`, `::rpc_core::Payload`).
pub(crate) fn is_payload(ty: &Type) -> bool {
    match peel(ty) {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Payload" && s.arguments.is_none()),
        _ => false,
    }
}

/// True when the type is the call's context: a path whose last segment is `CallContext` with
/// no generic arguments.
pub(crate) fn is_context(ty: &Type) -> bool {
    match peel(ty) {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "CallContext" && s.arguments.is_none()),
        _ => false,
    }
}

/// Which end of a stream an argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// `Sink<T[, C]>`: the implementation sends items; the method is server-streaming.
    Sink,
    /// `Source<T[, C]>`: the implementation reads items; the method is client-streaming.
    Source,
}

impl StreamEnd {
    /// The type's own name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StreamEnd::Sink => "Sink",
            StreamEnd::Source => "Source",
        }
    }
}

/// If the type is a stream end — a path whose last segment is `Sink` or `Source` — which one,
/// and its generic arguments as written (`<T>` or `<T, C>`; `None` when they are not one or two
/// types).
pub(crate) fn stream_end(
    ty: &Type,
) -> Option<(StreamEnd, Option<syn::AngleBracketedGenericArguments>)> {
    let Type::Path(p) = peel(ty) else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    let end = if last.ident == "Sink" {
        StreamEnd::Sink
    } else if last.ident == "Source" {
        StreamEnd::Source
    } else {
        return None;
    };
    let generics = match &last.arguments {
        PathArguments::AngleBracketed(args)
            if (1..=2).contains(&args.args.len())
                && args
                    .args
                    .iter()
                    .all(|a| matches!(a, GenericArgument::Type(_))) =>
        {
            Some(args.clone())
        }
        _ => None,
    };
    Some((end, generics))
}

/// True for `()`.
fn is_unit(ty: &Type) -> bool {
    matches!(peel(ty), Type::Tuple(t) if t.elems.is_empty())
}

/// If the type is a `Result` with two type arguments (last path segment `Result`), its `T`
/// and `E`.
fn result_parts(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(p) = peel(ty) else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(ok), Some(err), None) if args.args.len() == 2 => Some((ok, err)),
        _ => None,
    }
}

/// What a successful reply carries.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// Nothing: `()` or no return type.
    Unit,
    /// An attachment (`Payload`).
    Payload,
    /// A value serialized with the codec.
    Serde(Box<Type>),
}

impl Value {
    fn of(ty: &Type) -> Value {
        if is_unit(ty) {
            Value::Unit
        } else if is_payload(ty) {
            Value::Payload
        } else {
            Value::Serde(Box::new(ty.clone()))
        }
    }
}

/// The shape of a method's return type.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The return type as written (`()` when omitted); the client wraps it in
    /// `Result<_, CallError>`.
    pub(crate) ty: Type,
    /// What the reply carries on success.
    pub(crate) ok: Value,
    /// The application error type, for `Result<T, E>`.
    pub(crate) err: Option<Type>,
}

impl Reply {
    /// Classifies a return type.
    pub(crate) fn of(output: &ReturnType) -> Reply {
        let ty: Type = match output {
            ReturnType::Default => syn::parse_quote_spanned!(output.span()=> ()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        match result_parts(&ty) {
            Some((ok, err)) => {
                let (ok, err) = (Value::of(ok), err.clone());
                Reply {
                    ty,
                    ok,
                    err: Some(err),
                }
            }
            None => Reply {
                ok: Value::of(&ty),
                ty,
                err: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn payload_is_recognised_by_last_segment() {
        assert!(is_payload(&parse_quote!(Payload)));
        assert!(is_payload(&parse_quote!(::rpc_core::Payload)));
        assert!(!is_payload(&parse_quote!(Payload<u8>)));
        assert!(!is_payload(&parse_quote!(PayloadRef)));
        assert!(!is_payload(&parse_quote!(&Payload)));
    }

    #[test]
    fn stream_ends_are_recognised_by_last_segment() {
        let sink: Type = parse_quote!(rpc_core::Sink<Tick>);
        assert!(matches!(stream_end(&sink), Some((StreamEnd::Sink, Some(g))) if g.args.len() == 1));
        let source: Type = parse_quote!(Source<Tick, ::rpc_core::codec::Prost>);
        assert!(
            matches!(stream_end(&source), Some((StreamEnd::Source, Some(g))) if g.args.len() == 2)
        );
        for bad in [
            parse_quote!(Sink),
            parse_quote!(Sink<'a, T>),
            parse_quote!(Source<A, B, C>),
        ] {
            assert!(matches!(stream_end(&bad), Some((_, None))));
        }
        assert!(stream_end(&parse_quote!(SinkHole<u8>)).is_none());
        assert!(stream_end(&parse_quote!(&Sink<u8>)).is_none());
    }

    #[test]
    fn service_args() {
        let args: ServiceArgs =
            syn::parse_quote!(package = "store.v1", codec = rpc_core::codec::Prost);
        assert_eq!(args.package.as_deref(), Some("store.v1"));
        assert!(args.codec.is_some());
        assert!(syn::parse2::<ServiceArgs>(quote::quote!(package = "store..v1")).is_err());
        assert!(syn::parse2::<ServiceArgs>(quote::quote!(package = store)).is_err());
        assert!(syn::parse2::<ServiceArgs>(quote::quote!(pkg = "store")).is_err());
    }

    #[test]
    fn replies_are_classified() {
        let r = Reply::of(&parse_quote!(-> Result<Payload, E>));
        assert!(matches!(r.ok, Value::Payload) && r.err.is_some());
        let r = Reply::of(&parse_quote!(-> ::core::result::Result<(), E>));
        assert!(matches!(r.ok, Value::Unit) && r.err.is_some());
        // One-argument aliases such as `io::Result<T>` are plain values.
        let r = Reply::of(&parse_quote!(-> io::Result<u32>));
        assert!(matches!(r.ok, Value::Serde(_)) && r.err.is_none());
        let r = Reply::of(&ReturnType::Default);
        assert!(matches!(r.ok, Value::Unit) && r.err.is_none());
        let r = Reply::of(&parse_quote!(-> Payload));
        assert!(matches!(r.ok, Value::Payload) && r.err.is_none());
    }
}
