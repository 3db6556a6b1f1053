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

use crate::parse::{Reply, StreamEnd, Value};
use crate::validate::{Arg, ArgKind, Method, Service};

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

/// The arguments that travel in the request's message, serialized with the codec.
fn value_args(m: &Method) -> impl Iterator<Item = &Arg> {
    m.args.iter().filter(|a| a.kind == ArgKind::Value)
}

/// The arguments that travel as the request's attachments.
fn payload_args(m: &Method) -> impl Iterator<Item = &Arg> {
    m.args.iter().filter(|a| a.kind == ArgKind::Payload)
}

/// The arguments the client passes: all but the stream ends, which the client gets back, and
/// the context, which the server makes.
fn request_args(m: &Method) -> impl Iterator<Item = &Arg> {
    m.args
        .iter()
        .filter(|a| !matches!(a.kind, ArgKind::Stream(_) | ArgKind::Context))
}

/// `let <ctx>: CallContext = ...;` from the request's other parts, for a method that takes its
/// context; nothing otherwise (the unary arms stay as they were).
fn bind_context(m: &Method) -> TokenStream {
    match m.args.iter().find(|a| a.kind == ArgKind::Context) {
        Some(a) => {
            let (ident, ty) = (&a.ident, &a.ty);
            quote_spanned! {ty.span()=>
                let #ident: #ty = ::rpc_core::CallContext::new(
                    __rpc_request.metadata,
                    __rpc_request.peer,
                    __rpc_request.deadline,
                )
                .with_response(__rpc_request.response);
            }
        }
        None => quote!(),
    }
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

/// `StoreClient`: id and path constants, constructors and one async method per service
/// method.
fn client(service: &Service) -> TokenStream {
    let vis = &service.vis;
    let client = client_ident(service);
    let doc = format!(
        "Client of the [`{}`] service: one async method per service method, each returning \
         `Err(CallError)` when the call itself fails.",
        service.name
    );

    let consts = service.methods.iter().map(|m| {
        let (const_ident, path_const_ident) = (&m.const_ident, &m.path_const_ident);
        let (id, path) = (m.id, &m.path);
        let doc = if m.explicit_id {
            format!(
                "Method id of `{}`, pinned with `#[method(id = {})]`.",
                m.name, m.id
            )
        } else {
            format!(
                "Method id of `{}`: the 32-bit FNV-1a hash of its path `\"{}\"` = `{:#010x}`.",
                m.name, m.path, m.id
            )
        };
        let path_doc = format!("Path of `{}`: `\"{}\"`.", m.name, m.path);
        quote! {
            #[doc = #doc]
            pub const #const_ident: u32 = #id;
            #[doc = #path_doc]
            pub const #path_const_ident: &'static str = #path;
        }
    });
    let listing = service.methods.iter().map(|m| {
        let (name, const_ident) = (&m.name, &m.const_ident);
        quote!((#name, Self::#const_ident))
    });
    let paths = service.methods.iter().map(|m| {
        let (path_const_ident, const_ident) = (&m.path_const_ident, &m.const_ident);
        quote!((Self::#path_const_ident, Self::#const_ident))
    });
    let path_arms = service.methods.iter().map(|m| {
        let (path_const_ident, const_ident) = (&m.path_const_ident, &m.const_ident);
        quote!(Self::#const_ident => ::core::option::Option::Some(Self::#path_const_ident),)
    });
    let methods = service.methods.iter().map(|m| {
        if m.is_unary() {
            client_method(service, m)
        } else {
            client_stream_method(service, m)
        }
    });
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

            /// Every method of the service as `(path, id)`, in declaration order.
            pub const PATHS: &'static [(&'static str, u32)] = &[#(#paths),*];

            /// The path of the method with id `method`, if the service has one.
            pub const fn path_of(method: u32) -> ::core::option::Option<&'static str> {
                match method {
                    #(#path_arms)*
                    _ => ::core::option::Option::None,
                }
            }

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

/// The client method's parameters (`key: String, data: Payload`) and the statements that
/// encode them into `__rpc_message` and `__rpc_attachments`.
fn client_request(service: &Service, m: &Method) -> (Vec<TokenStream>, TokenStream) {
    let params = request_args(m)
        .map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        })
        .collect();
    let codec = codec(service);
    let values: Vec<_> = value_args(m).map(|a| &a.ident).collect();
    let args_ty = args_tuple_type(m, true);
    let args_value = match values.as_slice() {
        [one] => quote!(#one),
        many => quote!((#(&#many,)*)),
    };
    let encode_args = codec_fn(&codec, "Encode", &args_ty);
    let attachments = payload_args(m).map(|a| &a.ident);
    let fmt = format!("{}: cannot encode the arguments: {{}}", m.path);
    if service.body_codec {
        let encode_body = codec_fn_named(&codec, "Encode", "encode_body", &args_ty);
        let encode = quote! {
            let ::rpc_core::Body { message: __rpc_message, attachments: __rpc_attachments } =
                #encode_body(&#args_value, ::std::vec![#(#attachments),*]).map_err(
                    |__rpc_err| ::rpc_core::CallError::Codec(::std::format!(#fmt, __rpc_err))
                )?;
        };
        return (params, encode);
    }
    let encode = quote! {
        let __rpc_message = #encode_args(&#args_value).map_err(
            |__rpc_err| ::rpc_core::CallError::Codec(::std::format!(#fmt, __rpc_err))
        )?;
        let __rpc_attachments: ::std::vec::Vec<::rpc_core::Payload> =
            ::std::vec![#(#attachments),*];
    };
    (params, encode)
}

/// One unary client method: encode the arguments, call, decode the reply.
fn client_method(service: &Service, m: &Method) -> TokenStream {
    let attrs = &m.attrs;
    let name = &m.ident;
    let const_ident = &m.const_ident;
    let full = &m.path;
    let (params, encode) = client_request(service, m);
    let reply_ty = client_reply_ty(service, m);
    let decode_reply = decode_reply(service, m);
    let params_with = params.clone();
    let with_name = format_ident!("{}_with_metadata", name, span = name.span());
    let with_doc = format!(
        "Calls `{}` like [`Self::{}`], and returns its result with the server's response \
         headers and trailers (empty when it sent none).",
        m.name, name
    );

    quote! {
        #(#attrs)*
        pub async fn #name(&self, #(#params),*)
            -> ::core::result::Result<#reply_ty, ::rpc_core::CallError>
        {
            #encode
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

        #[doc = #with_doc]
        pub async fn #with_name(&self, #(#params_with),*)
            -> ::rpc_core::Reply<::core::result::Result<#reply_ty, ::rpc_core::CallError>>
        {
            let mut __rpc_headers = ::rpc_core::Metadata::new();
            let mut __rpc_trailers = ::rpc_core::Metadata::new();
            let __rpc_result = async {
                #encode
                let __rpc_full = self
                    .inner
                    .call_with_metadata(
                        Self::#const_ident,
                        ::rpc_core::Body { message: __rpc_message, attachments: __rpc_attachments },
                        ::core::clone::Clone::clone(&self.options),
                    )
                    .await;
                __rpc_headers = __rpc_full.headers;
                __rpc_trailers = __rpc_full.trailers;
                let __rpc_reply = __rpc_full
                    .result
                    .map_err(|__rpc_err| ::rpc_core::CallError::for_method(__rpc_err, #full));
                #decode_reply
            }
            .await;
            ::rpc_core::Reply { result: __rpc_result, headers: __rpc_headers, trailers: __rpc_trailers }
        }
    }
}

/// Statements turning `__rpc_reply: Result<Body, CallError>`, the answer to a call, into the
/// method's `Result<R, CallError>`: the unary decode, shared with client-streaming methods.
fn decode_reply(service: &Service, m: &Method) -> TokenStream {
    let codec = codec(service);
    let full = &m.path;
    let value = client_value(&codec, service.body_codec, &m.reply.ok, full);
    let app_err = m.reply.err.as_ref().filter(|_| !service.status_errors);
    match app_err {
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
            let fmt = format!("{full}: cannot decode the application error: {{}}");
            let decode_app = codec_fn(&codec, "Decode", err_ty);
            quote! {
                match __rpc_reply {
                    ::core::result::Result::Ok(#body_pat) => {
                        ::core::result::Result::map(#value, ::core::result::Result::Ok)
                    }
                    ::core::result::Result::Err(::rpc_core::CallError::Status(__rpc_status))
                        if __rpc_status.code == ::rpc_core::Code::APPLICATION =>
                    {
                        let __rpc_app = #decode_app(__rpc_status.details).map_err(
                            |__rpc_err| ::rpc_core::CallError::Codec(::std::format!(#fmt, __rpc_err))
                        )?;
                        ::core::result::Result::Ok(::core::result::Result::Err(__rpc_app))
                    }
                    ::core::result::Result::Err(__rpc_err) => {
                        ::core::result::Result::Err(__rpc_err)
                    }
                }
            }
        }
    }
}

/// `::rpc_core::Sink<..>` or `::rpc_core::Source<..>` with the generic arguments the user wrote
/// on the server's other end.
fn stream_type(end: StreamEnd, generics: &syn::AngleBracketedGenericArguments) -> TokenStream {
    let args = &generics.args;
    match end {
        StreamEnd::Sink => quote!(::rpc_core::Sink<#args>),
        StreamEnd::Source => quote!(::rpc_core::Source<#args>),
    }
}

/// One streaming client method: encode the other arguments into the request, open the call,
/// and hand back its typed ends: the server's `Sink` becomes the client's `Source` and the
/// server's `Source` the client's `Sink`; a client-streaming call also returns the future of its
/// one answer.
fn client_stream_method(service: &Service, m: &Method) -> TokenStream {
    let attrs = &m.attrs;
    let name = &m.ident;
    let const_ident = &m.const_ident;
    let full = &m.path;
    let (params, encode) = client_request(service, m);
    let mode = match (&m.sink, &m.source) {
        (Some(_), Some(_)) => quote!(BIDI),
        (Some(_), None) => quote!(SERVER_STREAMING),
        _ => quote!(CLIENT_STREAMING),
    };
    let open = quote! {
        #encode
        let __rpc_stream = self
            .inner
            .open(
                Self::#const_ident,
                ::rpc_core::Body { message: __rpc_message, attachments: __rpc_attachments },
                ::rpc_core::CallMode::#mode,
                ::core::clone::Clone::clone(&self.options),
            )
            .await
            .map_err(|__rpc_err| ::rpc_core::CallError::for_method(__rpc_err, #full))?;
    };
    let (ret, body) = match (&m.sink, &m.source) {
        (Some(items), None) => {
            let source = stream_type(StreamEnd::Source, items);
            (
                source,
                quote! {
                    ::core::result::Result::Ok(::rpc_core::Source::new(
                        ::rpc_core::StreamReceiver::for_method(__rpc_stream.receiver, #full),
                    ))
                },
            )
        }
        (Some(items_in), Some(items_out)) => {
            let source = stream_type(StreamEnd::Source, items_in);
            let sink = stream_type(StreamEnd::Sink, items_out);
            (
                quote!((#sink, #source)),
                quote! {
                    ::core::result::Result::Ok((
                        ::rpc_core::Sink::new(__rpc_stream.sender),
                        ::rpc_core::Source::new(
                            ::rpc_core::StreamReceiver::for_method(__rpc_stream.receiver, #full),
                        ),
                    ))
                },
            )
        }
        (None, items) => {
            let items = items.as_ref().expect("a streaming method has a stream end");
            let sink = stream_type(StreamEnd::Sink, items);
            let (answer_ty, answer) = client_stream_answer(service, m, false);
            let (with_ty, with_answer) = client_stream_answer(service, m, true);
            let with_name = format_ident!("{}_with_metadata", name, span = name.span());
            let with_doc = format!(
                "Opens `{}` like [`Self::{}`]; its answer comes with the server's response \
                 headers and trailers (empty when it sent none).",
                m.name, name
            );
            let ret = |answer_ty: &TokenStream| {
                quote! {
                    (#sink, ::rpc_core::BoxFuture<'static, #answer_ty>)
                }
            };
            let (ret_plain, ret_with) = (ret(&answer_ty), ret(&with_ty));
            return quote! {
                #(#attrs)*
                pub async fn #name(&self, #(#params),*)
                    -> ::core::result::Result<#ret_plain, ::rpc_core::CallError>
                {
                    #open
                    #answer
                }

                #[doc = #with_doc]
                pub async fn #with_name(&self, #(#params),*)
                    -> ::core::result::Result<#ret_with, ::rpc_core::CallError>
                {
                    #open
                    #with_answer
                }
            };
        }
    };

    quote! {
        #(#attrs)*
        pub async fn #name(&self, #(#params),*)
            -> ::core::result::Result<#ret, ::rpc_core::CallError>
        {
            #open
            #body
        }
    }
}

/// The end of a client-streaming method after its call is open: its `Sink` and the future of
/// its one answer, decoded as a unary reply; `with_metadata`: the future yields a
/// `rpc_core::Reply` with the server's response headers and trailers beside the result.
/// Returns the future's output type and the statements.
fn client_stream_answer(service: &Service, m: &Method, with_metadata: bool) -> (TokenStream, TokenStream) {
    let full = &m.path;
    let reply_ty = client_reply_ty(service, m);
    let decode_reply = decode_reply(service, m);
    let no_answer = format!("{full}: the call ended without an answer");
    let result_ty = quote!(::core::result::Result<#reply_ty, ::rpc_core::CallError>);
    let (answer_ty, finish) = if with_metadata {
        (
            quote!(::rpc_core::Reply<#result_ty>),
            quote! {
                ::rpc_core::Reply {
                    result: __rpc_decode(__rpc_reply),
                    headers: __rpc_receiver.headers().cloned().unwrap_or_default(),
                    trailers: __rpc_receiver.trailers().cloned().unwrap_or_default(),
                }
            },
        )
    } else {
        (result_ty.clone(), quote!(__rpc_decode(__rpc_reply)))
    };
    let statements = quote! {
        // The unary decode, on the one answer: a function, so that its `?`s return from it
        // and not from the future.
        fn __rpc_decode(
            __rpc_reply: ::core::result::Result<::rpc_core::Body, ::rpc_core::CallError>,
        ) -> #result_ty {
            #decode_reply
        }
        let ::rpc_core::CallStream { sender: __rpc_sender, receiver: mut __rpc_receiver } =
            __rpc_stream;
        let __rpc_answer = async move {
            let __rpc_reply = match __rpc_receiver.recv().await {
                ::core::option::Option::Some(__rpc_reply) => {
                    __rpc_reply.map_err(|__rpc_err| ::rpc_core::CallError::for_method(__rpc_err, #full))
                }
                ::core::option::Option::None => ::core::result::Result::Err(
                    ::rpc_core::CallError::Status(::rpc_core::Status::new(
                        ::rpc_core::Code::INTERNAL,
                        #no_answer,
                    )),
                ),
            };
            // The answer's frame carried the trailers too: they are in.
            #finish
        };
        ::core::result::Result::Ok((
            ::rpc_core::Sink::new(__rpc_sender),
            ::std::boxed::Box::pin(__rpc_answer) as ::rpc_core::BoxFuture<'static, #answer_ty>,
        ))
    };
    (answer_ty, statements)
}

/// An expression of type `Result<V, CallError>` turning the reply body `__rpc_body` into
/// the success value `V`. (`()` needs no body; the caller does not bind it.)
fn client_value(codec: &TokenStream, body_codec: bool, value: &Value, full: &str) -> TokenStream {
    match value {
        Value::Unit => quote!(::core::result::Result::Ok(())),
        Value::Serde(ty) if body_codec => {
            let fmt = format!("{full}: cannot decode the reply: {{}}");
            let decode = codec_fn_named(codec, "Decode", "decode_body", ty);
            let extra = format!("{full}: the reply has {{}} attachment(s) its message does not take");
            quote! {
                match #decode(__rpc_body) {
                    ::core::result::Result::Ok((__rpc_value, __rpc_rest)) if __rpc_rest.is_empty() => {
                        ::core::result::Result::Ok(__rpc_value)
                    }
                    ::core::result::Result::Ok((_, __rpc_rest)) => ::core::result::Result::Err(
                        ::rpc_core::CallError::Codec(::std::format!(#extra, __rpc_rest.len())),
                    ),
                    ::core::result::Result::Err(__rpc_err) => ::core::result::Result::Err(
                        ::rpc_core::CallError::Codec(::std::format!(#fmt, __rpc_err)),
                    ),
                }
            }
        }
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
    let client = client_ident(service);
    let server_name = server.to_string();
    let (name, path) = (&service.name, &service.path);
    let doc = format!(
        "Server side of the [`{name}`] service: wraps an implementation and answers requests \
         by method id. Hand it to the server builder as its `Service`."
    );
    let (unary, streaming): (Vec<&Method>, Vec<&Method>) =
        service.methods.iter().partition(|m| m.is_unary());
    let unary_arms = unary.iter().map(|m| server_arm(service, m));
    let stream_arms = streaming.iter().map(|m| server_arm(service, m));
    // A call of the wrong shape: the client's mode is not the method's.
    let misfit = |m: &Method, why: &str| {
        let const_ident = &m.const_ident;
        let message = format!("{}: {why}", m.path);
        quote! {
            #client::#const_ident => ::std::boxed::Box::pin(::core::future::ready(
                ::core::result::Result::Err(::rpc_core::Status::invalid_argument(#message)),
            )),
        }
    };
    let streaming_called_as_unary = streaming.iter().map(|m| {
        misfit(
            m,
            "a streaming method, called as a unary one (open it as a stream)",
        )
    });
    let unary_called_as_stream = unary
        .iter()
        .map(|m| misfit(m, "a unary method, called as a stream"));

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

            /// The path of the method with id `method`, if the service has one.
            pub const fn path_of(method: u32) -> ::core::option::Option<&'static str> {
                #client::path_of(method)
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
                // One test of the stream's presence picks the arms of the call's shape; the
                // unary arms are as they were before calls could stream.
                match __rpc_request.stream {
                    ::core::option::Option::None => match __rpc_request.method {
                        #(#unary_arms)*
                        #(#streaming_called_as_unary)*
                        __rpc_method => ::std::boxed::Box::pin(::core::future::ready(
                            ::core::result::Result::Err(
                                ::rpc_core::Status::unimplemented(__rpc_method),
                            ),
                        )),
                    },
                    ::core::option::Option::Some(__rpc_stream) => match __rpc_request.method {
                        #(#stream_arms)*
                        #(#unary_called_as_stream)*
                        __rpc_method => {
                            ::core::mem::drop(__rpc_stream);
                            ::std::boxed::Box::pin(::core::future::ready(
                                ::core::result::Result::Err(
                                    ::rpc_core::Status::unimplemented(__rpc_method),
                                ),
                            ))
                        }
                    },
                }
            }

            fn name(&self) -> &'static str {
                #path
            }

            fn methods(&self) -> &'static [(&'static str, u32)] {
                #client::PATHS
            }
        }
    }
}

/// The statements at the start of a server arm's future: check the request's attachments,
/// decode its message and bind each request argument by its name.
fn decode_request(service: &Service, m: &Method) -> TokenStream {
    let full = &m.path;
    let n_attachments = payload_args(m).count();
    let value_idents: Vec<_> = value_args(m).map(|a| &a.ident).collect();
    let codec = codec(service);
    let args_ty = args_tuple_type(m, false);
    let args_pat = match value_idents.as_slice() {
        [one] => quote!(#one),
        many => quote!((#(#many,)*)),
    };
    let decode_args = codec_fn(&codec, "Decode", &args_ty);
    let count_fmt = format!("{full}: expected {n_attachments} attachment(s), got {{}}");
    let decode_fmt = format!("{full}: cannot decode the arguments: {{}}");
    let missing = format!("{full}: missing attachment");

    let take_attachments = if n_attachments == 0 {
        quote!()
    } else {
        let payloads = payload_args(m).map(|a| &a.ident);
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

    if service.body_codec {
        // The codec takes the attachments of the message's own fields; the method's `Payload`
        // arguments are the ones after them.
        let decode_body = codec_fn_named(&codec, "Decode", "decode_body", &args_ty);
        let take_payloads = payload_args(m).map(|a| {
            let ident = &a.ident;
            quote! {
                let ::core::option::Option::Some(#ident) =
                    ::core::iter::Iterator::next(&mut __rpc_rest)
                else {
                    return ::core::result::Result::Err(::rpc_core::Status::new(
                        ::rpc_core::Code::INTERNAL,
                        #missing,
                    ));
                };
            }
        });
        let (rest, fits) = if n_attachments == 0 {
            (quote!(_), quote!(__rpc_rest.is_empty()))
        } else {
            (quote!(mut __rpc_rest), quote!(__rpc_rest.len() == #n_attachments))
        };
        return quote! {
            let (#args_pat, #rest) = match #decode_body(__rpc_request.body) {
                ::core::result::Result::Ok((__rpc_args, __rpc_rest)) if #fits =>
                {
                    (__rpc_args, ::core::iter::IntoIterator::into_iter(__rpc_rest))
                }
                ::core::result::Result::Ok((_, __rpc_rest)) => {
                    return ::core::result::Result::Err(::rpc_core::Status::invalid_argument(
                        ::std::format!(#count_fmt, __rpc_rest.len()),
                    ));
                }
                ::core::result::Result::Err(__rpc_err) => {
                    return ::core::result::Result::Err(::rpc_core::Status::invalid_argument(
                        ::std::format!(#decode_fmt, __rpc_err),
                    ));
                }
            };
            #(#take_payloads)*
        };
    }
    quote! {
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
    }
}

/// One match arm of the server: check and decode the arguments, call the implementation, encode
/// its answer. For a streaming method, the call's stream `__rpc_stream` also becomes the
/// method's `Sink` and/or `Source` ([`stream_ends`]).
fn server_arm(service: &Service, m: &Method) -> TokenStream {
    let client = client_ident(service);
    let trait_ident = &service.ident;
    let const_ident = &m.const_ident;
    let name = &m.ident;
    let decode = decode_request(service, m);
    let context = bind_context(m);
    let ends = stream_ends(m);
    let all_idents = m.args.iter().map(|a| &a.ident);
    let call = quote! {
        <__RpcImpl as #trait_ident>::#name(&*__rpc_service, #(#all_idents),*).await
    };
    let reply = server_reply(service, &call, &m.reply, &m.path);

    quote! {
        #client::#const_ident => {
            let __rpc_service = ::core::clone::Clone::clone(&self.inner);
            ::std::boxed::Box::pin(async move {
                #context
                #decode
                #ends
                #reply
            })
        }
    }
}

/// A streaming method's `Sink` and/or `Source` bound from the call's stream `__rpc_stream`;
/// nothing for a unary method. The server's stream ends when the method returns: cleanly on
/// `()`/`Ok(())`, with the application error on `Err`; a client-streaming method's answer is
/// encoded as a unary one's.
fn stream_ends(m: &Method) -> TokenStream {
    if m.is_unary() {
        return quote!();
    }
    let ends = m.args.iter().filter_map(|a| {
        let (ident, ty) = (&a.ident, &a.ty);
        match a.kind {
            ArgKind::Stream(StreamEnd::Sink) => Some(quote_spanned! {ty.span()=>
                let #ident: #ty = ::rpc_core::Sink::new(__rpc_sender);
            }),
            ArgKind::Stream(StreamEnd::Source) => Some(quote_spanned! {ty.span()=>
                let #ident: #ty = ::rpc_core::Source::new(__rpc_receiver);
            }),
            _ => None,
        }
    });
    let sender = if m.sink.is_some() { quote!(__rpc_sender) } else { quote!(_) };
    let receiver = if m.source.is_some() { quote!(__rpc_receiver) } else { quote!(_) };
    quote! {
        let ::rpc_core::CallStream { sender: #sender, receiver: #receiver } = __rpc_stream;
        #(#ends)*
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

/// `<Codec as ::rpc_core::codec::Encode<T>>::<f>` (or `Decode`) for a method `f` of the trait
/// other than its namesake (`encode_body`, `decode_body`), spanned on `ty` like [`codec_fn`].
fn codec_fn_named(codec: &TokenStream, which: &str, f: &str, ty: &impl quote::ToTokens) -> TokenStream {
    let span = ty.span();
    let tr = syn::Ident::new(which, span);
    let f = syn::Ident::new(f, span);
    let codec = respan(codec.clone(), span);
    quote_spanned!(span=> <#codec as ::rpc_core::codec::#tr<#ty>>::#f)
}

/// What the client's method yields inside `Result<_, CallError>`: the method's return type,
/// or, when its errors are statuses ([`Service::status_errors`]), the success type alone (the
/// status is the `CallError`).
fn client_reply_ty(service: &Service, m: &Method) -> TokenStream {
    if !(service.status_errors && m.reply.err.is_some()) {
        let ty = &m.reply.ty;
        return quote!(#ty);
    }
    match &m.reply.ok {
        Value::Unit => quote!(()),
        Value::Payload => quote!(::rpc_core::Payload),
        Value::Serde(ty) => quote!(#ty),
    }
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
    let values: Vec<_> = value_args(m).collect();
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
fn server_reply(service: &Service, call: &TokenStream, reply: &Reply, full: &str) -> TokenStream {
    let codec = &codec(service);
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
        Value::Serde(ty) if service.body_codec => {
            let encode_body = codec_fn_named(codec, "Encode", "encode_body", ty);
            quote! {
                match #encode_body(&__rpc_value, ::std::vec::Vec::new()) {
                    ::core::result::Result::Ok(__rpc_body) => __rpc_body,
                    ::core::result::Result::Err(__rpc_err) => {
                        return ::core::result::Result::Err(::rpc_core::Status::new(
                            ::rpc_core::Code::INTERNAL,
                            ::std::format!(#encode_fmt, __rpc_err),
                        ));
                    }
                }
            }
        }
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
    if reply.err.is_some() && service.status_errors {
        quote! {
            match #call {
                ::core::result::Result::Ok(#value_pat) => ::core::result::Result::Ok(#body),
                ::core::result::Result::Err(__rpc_status) => {
                    ::core::result::Result::Err(__rpc_status)
                }
            }
        }
    } else if let Some(err_ty) = &reply.err {
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
