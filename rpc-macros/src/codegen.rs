//! Generating the rewritten trait, the typed client and the server dispatcher from a checked
//! [`Service`].
//!
//! Every path in the output is absolute (`::rpc_core::…`, `::core::…`, `::std::…`) so the code
//! compiles wherever the trait is, even under `#![no_implicit_prelude]`; locals are prefixed
//! `__rpc_` so they cannot shadow or be shadowed by the user's argument names.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemTrait, Pat, TraitItem, Type};

use crate::parse::{Reply, Value};
use crate::validate::{Method, Service};

/// The whole expansion: trait, client, server.
pub(crate) fn expand(service: &Service) -> TokenStream {
    let service_trait = service_trait(service);
    let client = client(service);
    let server = server(service);
    quote! {
        #service_trait
        #client
        #server
    }
}

/// What is emitted next to the errors when the trait is not a valid service: the trait as
/// the user wrote it, minus `#[method]` attributes, with unusable argument patterns renamed
/// and without what rustc would report again (variadics, `mut self`), so the errors are ours
/// alone and code using the trait elsewhere still resolves.
pub(crate) fn fallback(mut item: ItemTrait) -> TokenStream {
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        crate::parse::strip_method_attrs(&mut f.attrs);
        // Each of these makes rustc add its own error to ours.
        f.sig.variadic = None;
        for (i, input) in f.sig.inputs.iter_mut().enumerate() {
            if let FnArg::Receiver(r) = input {
                if r.reference.is_none() {
                    r.mutability = None;
                }
            }
            if let FnArg::Typed(typed) = input {
                let plain = matches!(
                    &*typed.pat,
                    Pat::Ident(p)
                        if p.subpat.is_none() && p.by_ref.is_none() && p.mutability.is_none()
                );
                if !plain {
                    let ident = format_ident!("__rpc_arg{}", i);
                    *typed.pat = syn::parse_quote!(#ident);
                }
            }
        }
    }
    quote!(#item)
}

/// `"Store/put"`, for error messages.
fn full_name(service: &Service, method: &Method) -> String {
    format!("{}/{}", service.name, method.name)
}

/// The trait, with each `async fn` turned into a `fn` returning a `Send` future, and
/// `Send + Sync + 'static` added to the supertraits, so the server can run calls on any
/// thread of a multi-threaded runtime.
fn service_trait(service: &Service) -> TokenStream {
    let Service {
        attrs,
        vis,
        ident,
        supertraits,
        ..
    } = service;
    let extra = if supertraits.is_empty() {
        quote!()
    } else {
        quote!(+ #supertraits)
    };
    let methods = service.methods.iter().map(|m| {
        let attrs = &m.attrs;
        let name = &m.ident;
        let args = m.args.iter().map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        });
        let output = &m.reply.ty;
        quote_spanned! {m.ident.span()=>
            #(#attrs)*
            fn #name(&self, #(#args),*)
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static #extra {
            #(#methods)*
        }
    }
}

/// The client's name: `StoreClient`.
fn client_ident(service: &Service) -> syn::Ident {
    format_ident!("{}Client", service.name, span = service.ident.span())
}

/// The server's name: `StoreServer`.
fn server_ident(service: &Service) -> syn::Ident {
    format_ident!("{}Server", service.name, span = service.ident.span())
}

/// `StoreClient`: id constants, constructors and one async method per service method.
fn client(service: &Service) -> TokenStream {
    let vis = &service.vis;
    let client = client_ident(service);
    let doc = format!(
        "Client of the [`{}`] service: one async method per service method, each returning \
         `Err(CallError)` when the call itself fails.",
        service.name
    );

    let consts = service.methods.iter().map(|m| {
        let const_ident = &m.const_ident;
        let id = m.id;
        let doc = if m.explicit_id {
            format!(
                "Method id of `{}`, pinned with `#[method(id = {})]`.",
                m.name, m.id
            )
        } else {
            format!(
                "Method id of `{}`: the 32-bit FNV-1a hash of `\"{}\"` = `{:#010x}`.",
                m.name,
                full_name(service, m),
                m.id
            )
        };
        quote! {
            #[doc = #doc]
            pub const #const_ident: u32 = #id;
        }
    });
    let listing = service.methods.iter().map(|m| {
        let (name, const_ident) = (&m.name, &m.const_ident);
        quote!((#name, Self::#const_ident))
    });
    let methods = service.methods.iter().map(|m| client_method(service, m));
    let new_doc = format!(
        "A client of [`{}`] over a connection, with default call options.",
        service.name
    );

    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            inner: ::rpc_core::Client,
            options: ::rpc_core::CallOptions,
        }

        impl #client {
            #(#consts)*

            /// Every method of the service as `(name, id)`, in declaration order.
            pub const METHODS: &'static [(&'static str, u32)] = &[#(#listing),*];

            #[doc = #new_doc]
            pub fn new(client: ::rpc_core::Client) -> Self {
                Self { inner: client, options: ::core::default::Default::default() }
            }

            /// The same connection with other call options (timeout, ...) for the calls made
            /// through the returned client.
            pub fn with_options(&self, options: ::rpc_core::CallOptions) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner), options }
            }

            /// The underlying connection, for raw calls.
            pub fn client(&self) -> &::rpc_core::Client {
                &self.inner
            }

            #(#methods)*
        }
    }
}

/// One client method: encode the arguments, call, decode the reply.
fn client_method(service: &Service, m: &Method) -> TokenStream {
    let attrs = &m.attrs;
    let name = &m.ident;
    let const_ident = &m.const_ident;
    let full = full_name(service, m);
    let params = m.args.iter().map(|a| {
        let (ident, ty) = (&a.ident, &a.ty);
        quote!(#ident: #ty)
    });
    let codec = codec(service);
    let values: Vec<_> = m.args.iter().filter(|a| !a.payload).map(|a| &a.ident).collect();
    let args_ty = args_tuple_type(m, true);
    let args_value = match values.as_slice() {
        [one] => quote!(#one),
        many => quote!((#(&#many,)*)),
    };
    let encode_args = codec_fn(&codec, "Encode", &args_ty);
    let attachments = m.args.iter().filter(|a| a.payload).map(|a| &a.ident);
    let reply_ty = &m.reply.ty;
    let codec_error = |what: &str| {
        let fmt = format!("{full}: {what}: {{}}");
        quote!(|__rpc_err| ::rpc_core::CallError::Codec(::std::format!(#fmt, __rpc_err)))
    };
    let encode_error = codec_error("cannot encode the arguments");
    let value = client_value(&codec, &m.reply.ok, &full);

    let decode_reply = match &m.reply.err {
        None if matches!(m.reply.ok, Value::Unit) => quote! {
            __rpc_reply?;
            #value
        },
        None => quote! {
            let __rpc_body = __rpc_reply?;
            #value
        },
        Some(err_ty) => {
            let body_pat = if matches!(m.reply.ok, Value::Unit) {
                quote!(_)
            } else {
                quote!(__rpc_body)
            };
            let decode_error = codec_error("cannot decode the application error");
            let decode_app = codec_fn(&codec, "Decode", err_ty);
            quote! {
                match __rpc_reply {
                    ::core::result::Result::Ok(#body_pat) => {
                        ::core::result::Result::map(#value, ::core::result::Result::Ok)
                    }
                    ::core::result::Result::Err(::rpc_core::CallError::Status(__rpc_status))
                        if __rpc_status.code == ::rpc_core::Code::APPLICATION =>
                    {
                        let __rpc_app = #decode_app(__rpc_status.details).map_err(#decode_error)?;
                        ::core::result::Result::Ok(::core::result::Result::Err(__rpc_app))
                    }
                    ::core::result::Result::Err(__rpc_err) => {
                        ::core::result::Result::Err(__rpc_err)
                    }
                }
            }
        }
    };

    quote! {
        #(#attrs)*
        pub async fn #name(&self, #(#params),*)
            -> ::core::result::Result<#reply_ty, ::rpc_core::CallError>
        {
            let __rpc_message = #encode_args(&#args_value).map_err(#encode_error)?;
            let __rpc_attachments: ::std::vec::Vec<::rpc_core::Payload> =
                ::std::vec![#(#attachments),*];
            let __rpc_reply = self
                .inner
                .call(
                    Self::#const_ident,
                    ::rpc_core::Body { message: __rpc_message, attachments: __rpc_attachments },
                    ::core::clone::Clone::clone(&self.options),
                )
                .await
                .map_err(|__rpc_err| ::rpc_core::CallError::for_method(__rpc_err, #full));
            #decode_reply
        }
    }
}

/// An expression of type `Result<V, CallError>` turning the reply body `__rpc_body` into
/// the success value `V`. (`()` needs no body; the caller does not bind it.)
fn client_value(codec: &TokenStream, value: &Value, full: &str) -> TokenStream {
    match value {
        Value::Unit => quote!(::core::result::Result::Ok(())),
        Value::Serde(ty) => {
            let fmt = format!("{full}: cannot decode the reply: {{}}");
            let decode = codec_fn(codec, "Decode", ty);
            quote! {
                #decode(__rpc_body.message).map_err(|__rpc_err| {
                    ::rpc_core::CallError::Codec(::std::format!(#fmt, __rpc_err))
                })
            }
        }
        Value::Payload => {
            let msg = format!("{full}: the reply carries no attachment");
            quote! {
                ::core::option::Option::ok_or_else(
                    ::core::iter::Iterator::next(
                        &mut ::core::iter::IntoIterator::into_iter(__rpc_body.attachments),
                    ),
                    || ::rpc_core::CallError::Codec(::std::string::ToString::to_string(#msg)),
                )
            }
        }
    }
}

/// `StoreServer<S>`: holds the implementation and dispatches requests to it by method id.
fn server(service: &Service) -> TokenStream {
    let vis = &service.vis;
    let trait_ident = &service.ident;
    let server = server_ident(service);
    let server_name = server.to_string();
    let name = &service.name;
    let doc = format!(
        "Server side of the [`{name}`] service: wraps an implementation and answers requests \
         by method id. Hand it to the server builder as its `Service`."
    );
    let arms = service.methods.iter().map(|m| server_arm(service, m));

    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            inner: ::std::sync::Arc<S>,
        }

        impl<S> #server<S> {
            /// Serves `service`.
            pub fn new(service: S) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Serves an implementation that is shared with other code.
            pub fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                Self { inner: service }
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#server_name).finish_non_exhaustive()
            }
        }

        impl<__RpcImpl: #trait_ident> ::rpc_core::Service for #server<__RpcImpl> {
            fn call(
                &self,
                __rpc_request: ::rpc_core::ServerRequest,
            ) -> ::rpc_core::BoxFuture<
                'static,
                ::core::result::Result<::rpc_core::Body, ::rpc_core::Status>,
            > {
                match __rpc_request.method {
                    #(#arms)*
                    __rpc_method => ::std::boxed::Box::pin(::core::future::ready(
                        ::core::result::Result::Err(
                            ::rpc_core::Status::unimplemented(__rpc_method),
                        ),
                    )),
                }
            }

            fn name(&self) -> &'static str {
                #name
            }
        }
    }
}

/// One match arm of the server: check and decode the arguments, call the implementation,
/// encode its answer.
fn server_arm(service: &Service, m: &Method) -> TokenStream {
    let client = client_ident(service);
    let trait_ident = &service.ident;
    let const_ident = &m.const_ident;
    let name = &m.ident;
    let full = full_name(service, m);

    let n_attachments = m.args.iter().filter(|a| a.payload).count();
    let value_idents: Vec<_> = m
        .args
        .iter()
        .filter(|a| !a.payload)
        .map(|a| &a.ident)
        .collect();
    let codec = codec(service);
    let args_ty = args_tuple_type(m, false);
    let args_pat = match value_idents.as_slice() {
        [one] => quote!(#one),
        many => quote!((#(#many,)*)),
    };
    let decode_args = codec_fn(&codec, "Decode", &args_ty);
    let all_idents = m.args.iter().map(|a| &a.ident);
    let count_fmt = format!("{full}: expected {n_attachments} attachment(s), got {{}}");
    let decode_fmt = format!("{full}: cannot decode the arguments: {{}}");
    let missing = format!("{full}: missing attachment");

    let take_attachments = if n_attachments == 0 {
        quote!()
    } else {
        let payloads = m.args.iter().filter(|a| a.payload).map(|a| &a.ident);
        quote! {
            let mut __rpc_attachments =
                ::core::iter::IntoIterator::into_iter(__rpc_body.attachments);
            #(
                let ::core::option::Option::Some(#payloads) =
                    ::core::iter::Iterator::next(&mut __rpc_attachments)
                else {
                    return ::core::result::Result::Err(::rpc_core::Status::new(
                        ::rpc_core::Code::INTERNAL,
                        #missing,
                    ));
                };
            )*
        }
    };

    let call = quote! {
        <__RpcImpl as #trait_ident>::#name(&*__rpc_service, #(#all_idents),*).await
    };
    let reply = server_reply(&codec, &call, &m.reply, &full);

    quote! {
        #client::#const_ident => {
            let __rpc_service = ::core::clone::Clone::clone(&self.inner);
            ::std::boxed::Box::pin(async move {
            let __rpc_body = __rpc_request.body;
            if __rpc_body.attachments.len() != #n_attachments {
                return ::core::result::Result::Err(::rpc_core::Status::invalid_argument(
                    ::std::format!(#count_fmt, __rpc_body.attachments.len()),
                ));
            }
            let #args_pat =
                match #decode_args(::core::clone::Clone::clone(&__rpc_body.message)) {
                    ::core::result::Result::Ok(__rpc_args) => __rpc_args,
                    ::core::result::Result::Err(__rpc_err) => {
                        return ::core::result::Result::Err(::rpc_core::Status::invalid_argument(
                            ::std::format!(#decode_fmt, __rpc_err),
                        ));
                    }
                };
            #take_attachments
            #reply
        })}
    }
}

/// `<Codec as ::rpc_core::codec::Encode<T>>::encode` (or `Decode`/`decode`), spanned on `ty`,
/// so that a type the codec cannot carry is reported on the user's signature.
fn codec_fn(codec: &TokenStream, which: &str, ty: &impl quote::ToTokens) -> TokenStream {
    let span = ty.span();
    let tr = syn::Ident::new(which, span);
    let f = syn::Ident::new(&which.to_lowercase(), span);
    // The bound `Codec: Encode<T>` is reported on the codec's tokens: give them the type's span.
    let codec = respan(codec.clone(), span);
    quote_spanned!(span=> <#codec as ::rpc_core::codec::#tr<#ty>>::#f)
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                t = proc_macro2::TokenTree::Group(group);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// The codec type: the service's, or postcard.
fn codec(service: &Service) -> TokenStream {
    match &service.codec {
        Some(path) => quote!(#path),
        None => quote!(::rpc_core::codec::Postcard),
    }
}

/// The type of the message: the one non-`Payload` argument's type, or the tuple of them (of
/// references to them on the sending side). One argument goes as itself, not as a 1-tuple, so
/// that a protobuf method's request is its message (postcard encodes both the same). It
/// carries the span of the first argument's type, so a type the codec cannot carry is reported
/// on the signature.
fn args_tuple_type(m: &Method, by_ref: bool) -> TokenStream {
    let values: Vec<_> = m.args.iter().filter(|a| !a.payload).collect();
    if let [one] = values.as_slice() {
        let ty = &one.ty;
        return quote_spanned!(ty.span()=> #ty);
    }
    let span = values.first().map_or_else(Span::call_site, |a| a.ty.span());
    let tys = values.iter().map(|a| {
        let ty = &a.ty;
        if by_ref {
            quote_spanned!(ty.span()=> &#ty)
        } else {
            quote!(#ty)
        }
    });
    quote_spanned!(span=> (#(#tys,)*))
}

/// The tail of a server arm: make the `call` and turn its answer into the
/// `Result<Body, Status>` reply.
fn server_reply(codec: &TokenStream, call: &TokenStream, reply: &Reply, full: &str) -> TokenStream {
    let ok = &reply.ok;
    let encode_fmt = format!("{full}: cannot encode the reply: {{}}");
    // The type in the turbofish carries the user's span: a type that is not `Serialize` is
    // reported on the signature, not on the `#[service]` line.
    let encode = |value: TokenStream, ty: &Type| {
        let encode = codec_fn(codec, "Encode", ty);
        quote! {
            match #encode(&#value) {
                ::core::result::Result::Ok(__rpc_bytes) => __rpc_bytes,
                ::core::result::Result::Err(__rpc_err) => {
                    return ::core::result::Result::Err(::rpc_core::Status::new(
                        ::rpc_core::Code::INTERNAL,
                        ::std::format!(#encode_fmt, __rpc_err),
                    ));
                }
            }
        }
    };
    let body = match ok {
        Value::Unit => quote!(<::rpc_core::Body as ::core::default::Default>::default()),
        Value::Serde(ty) => {
            let message = encode(quote!(__rpc_value), ty);
            quote!(::rpc_core::Body {
                message: #message,
                attachments: ::std::vec::Vec::new(),
            })
        }
        Value::Payload => quote!(::rpc_core::Body {
            message: ::rpc_core::Bytes::new(),
            attachments: ::std::vec![__rpc_value],
        }),
    };
    // `()` has nothing to bind; binding it anyway would trip `clippy::let_unit_value`.
    let value_pat = if matches!(ok, Value::Unit) {
        quote!(_)
    } else {
        quote!(__rpc_value)
    };
    if let Some(err_ty) = &reply.err {
        let details = encode(quote!(__rpc_app), err_ty);
        quote! {
            match #call {
                ::core::result::Result::Ok(#value_pat) => ::core::result::Result::Ok(#body),
                ::core::result::Result::Err(__rpc_app) => {
                    ::core::result::Result::Err(::rpc_core::Status::application(#details))
                }
            }
        }
    } else if matches!(ok, Value::Unit) {
        quote! {
            #call;
            ::core::result::Result::Ok(#body)
        }
    } else {
        quote! {
            let __rpc_value = #call;
            ::core::result::Result::Ok(#body)
        }
    }
}
