//! The `#[service]` attribute macro of zcrpc: a trait of `async fn`s becomes a typed client
//! and a server dispatcher. Use it through `rpc_core`, which re-exports it as
//! `rpc_core::service`; [`service`]'s page documents what it generates and the rules it
//! checks.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;

/// Turns a trait of `async fn`s into a zcrpc service: the rewritten trait, a typed client
/// `{Trait}Client` and a server dispatcher `{Trait}Server<S>`.
///
/// Options: `#[service(codec = <type>, package = "<dotted.name>")]`, both optional. Methods may
/// carry `#[method(id = N)]` to pin their wire id; `Sink`/`Source` arguments make them
/// streaming. Below: what is generated, how arguments and streams travel, method paths and
/// ids, and the compile-time checks.
///
/// ```text
/// use rpc_core::{CallError, Payload, Sink, Source};
///
/// #[rpc_core::service]
/// pub trait Store {
///     /// Stores a blob; returns its version.
///     async fn put(&self, key: String, data: Payload) -> Result<u64, StoreError>;
///     async fn get(&self, key: String) -> Result<Payload, StoreError>;
///     async fn add(&self, a: u64, b: u64) -> u64;
///     async fn ping(&self);
///     #[method(id = 7)]
///     async fn fixed(&self) -> u32;
///     /// Server streaming: the implementation sends changes into `out`.
///     async fn watch(&self, prefix: String, out: Sink<Change>) -> Result<(), StoreError>;
///     /// Client streaming: the implementation reads blobs from `blobs`, answers once.
///     async fn put_many(&self, blobs: Source<String>) -> Result<u64, StoreError>;
///     /// Bidirectional.
///     async fn sync(&self, theirs: Source<Change>, ours: Sink<Change>);
/// }
///
/// // Server: implement the trait with plain `async fn`s and serve `StoreServer::new(imp)`.
/// // Client: `StoreClient::new(client).put("k".into(), blob).await?` gives
/// //         `Result<Result<u64, StoreError>, CallError>`;
/// //         `.watch(p).await?` a `Source<Change>`;
/// //         `.put_many().await?` a `(Sink<String>, future of Result<Result<u64, StoreError>, CallError>)`;
/// //         `.sync().await?` a `(Sink<Change>, Source<Change>)`.
/// ```
///
/// `rpc_core`'s crate page has this in code that compiles and runs (unary, streaming, errors
/// and the generated constants); so do `rpc-core/tests/macro_calls.rs` and
/// `rpc-core/tests/macro_streams.rs`.
///
/// # What is generated
///
/// For a trait `Store`:
///
/// - **the trait**, each `async fn m(&self, ..) -> R` rewritten as
///   `fn m(&self, ..) -> impl Future<Output = R> + Send`, with `Send + Sync + 'static` added to
///   its supertraits: implementations still write plain `async fn`s, and the server can run
///   calls concurrently on any thread. Doc comments and other attributes are kept.
/// - **`StoreClient`** (`Clone + Debug`), built with `StoreClient::new(client)` from a
///   connected `rpc_core::Client`; one `pub async fn` per method with the same arguments
///   (minus its `Sink`/`Source` arguments: see below), returning `Result<R, CallError>` — for a
///   method returning `Result<T, E>` that is `Result<Result<T, E>, CallError>`: the outer error
///   says the call failed (connection, deadline, codec, a status from the server), the inner
///   one is the application's answer. `store.put(k, v).await??` takes both apart in a function
///   returning `Result<_, Box<dyn std::error::Error>>`, which needs `E: std::error::Error`
///   (`CallError` is one); otherwise match the two levels. `with_options(options)` gives a
///   client whose calls use other `CallOptions` (deadline, idempotence, metadata headers);
///   `client()` is the `rpc_core::Client` underneath: its stats, `close()`, and raw calls
///   (`open`). The method ids
///   and paths are its associated constants: `StoreClient::PUT` (the method name in
///   SCREAMING_SNAKE_CASE, a `u32`), `StoreClient::PUT_PATH` (`"Store/put"`),
///   `StoreClient::METHODS`, every `(name, id)` in declaration order, and
///   `StoreClient::PATHS`, every `(path, id)`; `StoreClient::path_of(id)` is the path of a
///   known id. Each unary method `put` also has `put_with_metadata`, with the same arguments,
///   returning `rpc_core::Reply<Result<R, CallError>>`: the result and the server's response
///   headers and trailers (`reply.result`, `reply.headers`, `reply.trailers`); a
///   client-streaming method `upload` has `upload_with_metadata`, whose answer future yields
///   that `Reply`. Streaming methods' `Source` has `headers()`, `trailers()` and
///   `response_headers().await`.
/// - **`StoreServer<S>`**, wrapping an implementation (`new(imp)` or `from_arc(arc)`), which
///   implements `rpc_core::Service`: it dispatches on the method id, decodes the arguments, calls
///   the implementation and encodes its answer. Its `name()` is `"Store"` (with a package:
///   `"store.v1.Store"`); `StoreServer::<S>::path_of(id)` names a known method, and its
///   `Service::methods()` lists every `(path, id)`, which routes calls to it when a server has
///   several services (`Server::builder().add_service(a).add_service(b).try_build()`).
///
/// # Arguments and results
///
/// - An argument or result whose type's last path segment is `Payload` (no generic
///   arguments) is an **attachment**: it travels after the message without being copied or
///   serialized. Several `Payload` arguments go as attachments in declaration order.
/// - Every other argument is **serialized** with the service's codec: the message is the one
///   non-`Payload` argument itself, or the tuple of them in declaration order (`()` for none).
///   The codec is postcard (`rpc_core::codec::Postcard`) unless the attribute names another:
///   `#[service(codec = rpc_core::codec::Prost)]` carries protobuf messages (a method then
///   takes one message and returns one; `()` is the empty message), and any type implementing
///   `rpc_core::codec::{Encode, Decode}` for the method's types can be named. Under a named
///   codec, values go through `Encode::encode_body` and `Decode::decode_body`, so a codec may
///   send parts of a message as attachments before the method's own `Payload`s:
///   `rpc_core::codec::Protobuf`, the codec of services generated from `.proto` files
///   (`zcrpc_codegen::proto`), sends messages' attachment fields that way, and a trait with
///   that codec and the `.proto` file's `package`, service and method names (`async fn
///   Put(&self, request: PutRequest) -> PutReply`) calls and serves the generated service.
/// - The return type may be `()` (or none), `T`, `Payload`, or `Result<T, E>` /
///   `Result<Payload, E>` / `Result<(), E>` (recognised by the last path segment `Result` with
///   two generic arguments; a one-argument alias such as `io::Result<T>` is a plain `T`).
///   `T` and `E` are what the codec carries (`Serialize + DeserializeOwned` for postcard,
///   `prost::Message` for prost). An `Err(e)` travels as a status with
///   code `APPLICATION` whose details are `e` encoded; the client decodes it back into `E`.
/// - Argument and return types must be owned (no references) and concrete (no `impl Trait`):
///   the receiving side decodes into a fresh value of exactly that type.
/// - An argument of type `CallContext` (`rpc_core::CallContext`, at most one, anywhere in the
///   list) does not travel: the server fills it in, and the client method does not take it. It
///   holds the request's metadata (`ctx.metadata`), the caller's address (`ctx.peer`, which
///   prints as `127.0.0.1:50412` or `unix:/run/app.sock`) and the deadline, and sets the
///   response headers and trailers (`ctx.set_header`, `ctx.set_trailer`).
///
/// # Streaming methods
///
/// An argument whose type's last path segment is `Sink` or `Source` (with one or two generic
/// arguments: `Sink<T>`, `Sink<T, C>`) is an end of the call's stream, not part of the request
/// (these are `rpc_core::Sink` and `rpc_core::Source`; `C` is the codec of the stream's items,
/// postcard unless named, whatever the service's codec):
///
/// | the method takes | it is | the generated client method returns (in `Result<_, CallError>`) |
/// |---|---|---|
/// | `out: Sink<T, C>` | server streaming | `Source<T, C>` |
/// | `input: Source<T, C>` | client streaming | `(Sink<T, C>, BoxFuture<'static, Result<R, CallError>>)` |
/// | both, `Source<A, C>` and `Sink<B, C2>` | bidirectional | `(Sink<A, C>, Source<B, C2>)` |
///
/// The other arguments (values and `Payload`s) travel in the request as for a unary method, and
/// the client method takes them. Each item is a value through the codec plus attachments
/// (`Sink::send_with`, `Source::recv_with`).
///
/// - A **server-streaming** or bidirectional method returns `()` or `Result<(), E>`: its stream
///   ends when it returns, cleanly, or on `Err(e)` with the `APPLICATION` status carrying `e`
///   encoded with the service's codec, which the client's `Source` yields as its last event
///   (`CallError::Status`, after every item sent before it; `e.application::<E, C>()` decodes
///   it back into `E`). Dropping the client's `Source`
///   (and `Sink`) cancels the call: the server drops the method's future.
/// - A **client-streaming** method returns any reply a unary method can; the client's future
///   yields it decoded exactly as a unary reply (`Result<Result<V, E>, CallError>` for
///   `Result<V, E>`). The request stream ends when the client's `Sink` is finished or dropped;
///   dropping the future too cancels the call.
/// - The call's deadline (`CallOptions::timeout`) bounds the whole call, streams included.
/// - A streaming method called as a unary one, or a unary method called as a stream, is
///   answered `INVALID_ARGUMENT` naming the method.
/// - A server that does not know the method answers `UNIMPLEMENTED`; the error names the path
///   the client asked for when it comes from `open` or a client-streaming call's answer, but a
///   `Source` yields it as the server sent it (`"unknown method id 0x…"`).
///
/// Failures: a request whose attachments are not as many as the method's `Payload` arguments,
/// or whose message does not decode, is answered with `INVALID_ARGUMENT` naming the method
/// (`"Store/put: ..."`); an unknown method id with `UNIMPLEMENTED`; a reply that cannot be
/// encoded with `INTERNAL`. On the client, encoding or decoding failures are
/// `CallError::Codec`.
///
/// # Method ids
///
/// Every method has a **path**: `"{Trait}/{method}"` — the trait's name, a slash, the method's
/// name, both exactly as written in the source (case kept) without a raw-identifier `r#`
/// prefix. With `#[service(package = "store.v1")]` (dot-separated identifiers, as in a
/// `.proto` file's `package`) the path is `"store.v1.Store/put"`.
///
/// Every request carries a 32-bit method id. Unless pinned, a method's id is
///
/// > the **32-bit FNV-1a** hash (offset basis `0x811c9dc5`, prime `0x01000193`: for each byte,
/// > xor it into the hash, then multiply by the prime modulo 2³²) of the UTF-8 bytes of
/// > its path.
///
/// `rpc_core::method_id(path)` (a `const fn`) computes the same hash, so code that knows only a
/// path can address the method. For example `Store::put` has id
/// `fnv1a_32("Store/put") = 0x0e28fcb0`; without a package the ids are those of before paths
/// existed. The id therefore
/// depends on neither the order of the methods nor the compiler: methods can be added,
/// reordered or removed without changing the others, and a peer built from another language
/// or a `.proto` file computes the same ids. Renaming the trait or a method changes the id.
///
/// `#[method(id = N)]` on a method pins its id to `N` (any `u32`), for example to keep the wire
/// id of a renamed method. Two methods with the same id — pinned twice or a hash collision — are
/// a compile error naming both.
///
/// # Rules, checked at compile time
///
/// Each broken rule is a compile error pointing at the offending code, and all of them are
/// reported at once:
///
/// - methods are `async fn` taking `&self` (not `self`, not `&mut self`: the server calls
///   methods concurrently), not generic, not `const`/`unsafe`/`extern`/variadic, with no
///   default body;
/// - each argument is named by a plain identifier (`key: String`, not `(a, b): (u32, u32)` or
///   `_`);
/// - a `Payload` is an argument or result of its own, not part of another type (`Vec<Payload>`,
///   `Option<Payload>`, a stream's item `Sink<Payload>`): postcard cannot encode it (checked
///   for postcard, the default codec, and for stream items without a codec of their own);
/// - a method takes at most one `Sink` and one `Source`, and one taking a `Sink` returns `()`
///   or `Result<(), E>`;
/// - the trait has no generics and contains only methods (no consts, types or macros);
/// - method ids are unique, and no method takes the name of a generated item
///   (`new`, `with_options`, `client`, `path_of`, or an id constant `METHODS` or `PATHS`, or
///   another method's path constant: `get_path` beside `get`);
/// - `package`, if given, is dotted identifiers.
///
/// The generated code names everything by absolute path (`::rpc_core::…`, `::core::…`,
/// `::std::…`), so it compiles in any module, including one under `#![no_implicit_prelude]`;
/// it needs the crate `rpc_core` to be a dependency under that name.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    zcrpc_codegen::service_attribute(args.into(), input.into()).into()
}

