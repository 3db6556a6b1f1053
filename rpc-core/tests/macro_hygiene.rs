//! The code `#[service]` generates names everything by absolute path: it must compile in a
//! module without the prelude, where `Result`, `Vec`, `Box`, `Ok`, `String`, `Clone`, ... are
//! not in scope.

mod no_prelude {
    #![no_implicit_prelude]

    #[derive(
        ::core::fmt::Debug, ::core::cmp::PartialEq, ::serde::Serialize, ::serde::Deserialize,
    )]
    pub struct Refused {
        pub reason: ::std::string::String,
    }

    /// A service whose methods cover every kind of argument and result.
    #[::rpc_core::service]
    pub trait Hygienic {
        /// An attachment and a serialized argument in, a `Result` out.
        async fn store(
            &self,
            name: ::std::string::String,
            data: ::rpc_core::Payload,
        ) -> ::core::result::Result<u64, Refused>;
        async fn fetch(&self, id: u64) -> ::core::result::Result<::rpc_core::Payload, Refused>;
        async fn check(&self, id: u64) -> ::core::result::Result<(), Refused>;
        async fn mirror(&self, data: ::rpc_core::Payload) -> ::rpc_core::Payload;
        async fn sum(
            &self,
            values: ::std::vec::Vec<u32>,
            extra: ::core::option::Option<u32>,
        ) -> u64;
        async fn nothing(&self);
        #[method(id = 1)]
        async fn pinned(&self) -> bool;
        /// Server streaming, with an attachment in the request.
        async fn numbers(
            &self,
            count: u32,
            tag: ::rpc_core::Payload,
            out: ::rpc_core::Sink<u32>,
        ) -> ::core::result::Result<(), Refused>;
        /// Client streaming.
        async fn total(
            &self,
            items: ::rpc_core::Source<u32, ::rpc_core::codec::Postcard>,
        ) -> ::core::result::Result<u64, Refused>;
        /// Bidirectional.
        async fn double(&self, input: ::rpc_core::Source<u32>, output: ::rpc_core::Sink<u64>);
    }

    pub struct Impl;

    impl Hygienic for Impl {
        async fn store(
            &self,
            name: ::std::string::String,
            data: ::rpc_core::Payload,
        ) -> ::core::result::Result<u64, Refused> {
            if name.is_empty() {
                ::core::result::Result::Err(Refused {
                    reason: ::std::string::ToString::to_string("empty name"),
                })
            } else {
                ::core::result::Result::Ok(data.len() as u64)
            }
        }

        async fn fetch(&self, id: u64) -> ::core::result::Result<::rpc_core::Payload, Refused> {
            ::core::result::Result::Ok(<::rpc_core::Payload as ::core::convert::From<
                ::std::vec::Vec<u8>,
            >>::from(::std::vec![id as u8; 3]))
        }

        async fn check(&self, id: u64) -> ::core::result::Result<(), Refused> {
            if id == 0 {
                ::core::result::Result::Err(Refused {
                    reason: ::std::string::ToString::to_string("zero"),
                })
            } else {
                ::core::result::Result::Ok(())
            }
        }

        async fn mirror(&self, data: ::rpc_core::Payload) -> ::rpc_core::Payload {
            data
        }

        async fn sum(
            &self,
            values: ::std::vec::Vec<u32>,
            extra: ::core::option::Option<u32>,
        ) -> u64 {
            let mut total = ::core::option::Option::unwrap_or(extra, 0) as u64;
            for v in values {
                total += v as u64;
            }
            total
        }

        async fn nothing(&self) {}

        async fn pinned(&self) -> bool {
            true
        }

        async fn numbers(
            &self,
            count: u32,
            tag: ::rpc_core::Payload,
            mut out: ::rpc_core::Sink<u32>,
        ) -> ::core::result::Result<(), Refused> {
            for i in 0..count {
                let attachments = ::std::vec![::core::clone::Clone::clone(&tag)];
                if out.send_with(i, attachments).await.is_err() {
                    break;
                }
            }
            ::core::result::Result::Ok(())
        }

        async fn total(
            &self,
            mut items: ::rpc_core::Source<u32, ::rpc_core::codec::Postcard>,
        ) -> ::core::result::Result<u64, Refused> {
            let mut total = 0u64;
            while let ::core::option::Option::Some(::core::result::Result::Ok(n)) =
                items.recv().await
            {
                total += n as u64;
            }
            ::core::result::Result::Ok(total)
        }

        async fn double(
            &self,
            mut input: ::rpc_core::Source<u32>,
            mut output: ::rpc_core::Sink<u64>,
        ) {
            while let ::core::option::Option::Some(::core::result::Result::Ok(n)) =
                input.recv().await
            {
                if output.send(n as u64 * 2).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// The prelude-free service also works at run time.
#[tokio::test]
async fn prelude_free_service_runs() {
    use no_prelude::{HygienicClient, HygienicServer, Impl, Refused};
    use rpc_core::{Client, ClientConfig, Payload, Server};

    let (a, b) = rpc_core::transport::mem::pair();
    tokio::spawn(
        Server::builder()
            .build(HygienicServer::new(Impl))
            .serve_connection(b),
    );
    let client = HygienicClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());

    assert_eq!(
        client
            .store("x".into(), Payload::from(vec![0u8; 10]))
            .await
            .unwrap(),
        Ok(10)
    );
    assert_eq!(
        client.store(String::new(), Payload::new()).await.unwrap(),
        Err(Refused {
            reason: "empty name".into()
        })
    );
    assert_eq!(
        &client.fetch(9).await.unwrap().unwrap().to_bytes()[..],
        &[9, 9, 9]
    );
    assert_eq!(
        client.check(0).await.unwrap(),
        Err(Refused {
            reason: "zero".into()
        })
    );
    assert_eq!(client.check(1).await.unwrap(), Ok(()));
    assert_eq!(
        &client
            .mirror(Payload::from(b"m".to_vec()))
            .await
            .unwrap()
            .to_bytes()[..],
        b"m"
    );
    assert_eq!(client.sum(vec![1, 2, 3], Some(4)).await.unwrap(), 10);
    client.nothing().await.unwrap();
    assert!(client.pinned().await.unwrap());
    assert_eq!(HygienicClient::PINNED, 1);

    let numbers = client
        .numbers(3, Payload::from(b"t".to_vec()))
        .await
        .unwrap();
    assert_eq!(numbers.collect().await.unwrap(), vec![0, 1, 2]);
    let (mut items, answer) = client.total().await.unwrap();
    for n in [1, 2, 3] {
        items.send(n).await.unwrap();
    }
    items.finish();
    assert_eq!(answer.await.unwrap(), Ok(6));
    let (mut input, mut output) = client.double().await.unwrap();
    input.send(21).await.unwrap();
    assert_eq!(output.recv().await.unwrap().unwrap(), 42);
    drop(input);
    assert!(output.recv().await.is_none());
}
