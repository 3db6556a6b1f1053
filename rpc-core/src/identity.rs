//! Who a TLS peer proved to be: what a handler sees of the peer's verified certificate
//! ([`crate::Peer::tls`]).

use std::net::IpAddr;

use bytes::Bytes;

/// A TLS connection's peer as its certificate names it, verified against the server's client
/// root store during the handshake (`transport::tls`). Built once per connection and
/// shared by every call on it (an `Arc` clone per call, no allocation).
///
/// A client that presented no certificate (the server does not require one) has an identity
/// with [`TlsIdentity::certificate`] `None` and every name empty: the connection is encrypted,
/// the peer is anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsIdentity {
    /// The certificate's subject, as RFC 4514 text (`CN=client-a, O=Example`); empty when the
    /// peer presented no certificate.
    pub subject: String,
    /// The subject's common name (`CN`), when it has one.
    pub common_name: Option<String>,
    /// The DNS names of the certificate's subject alternative names.
    pub dns_names: Vec<String>,
    /// The IP addresses of its subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// The URIs of its subject alternative names (a SPIFFE id: `spiffe://example.org/api`).
    pub uris: Vec<String>,
    /// The e-mail addresses (RFC 822 names) of its subject alternative names.
    pub emails: Vec<String>,
    /// The peer's end-entity certificate, DER-encoded, for checks of your own (`None` when the
    /// peer presented none).
    pub certificate: Option<Bytes>,
    /// The negotiated protocol (ALPN), `zcrpc/1`.
    pub alpn: &'static str,
}

impl TlsIdentity {
    /// True when the peer presented a certificate, verified in the handshake.
    pub fn is_authenticated(&self) -> bool {
        self.certificate.is_some()
    }

    /// True when the certificate names `name` among its DNS names or as its common name.
    pub fn has_name(&self, name: &str) -> bool {
        self.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || self.common_name.as_deref().is_some_and(|cn| cn.eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.subject.is_empty() {
            f.write_str("no client certificate")
        } else {
            f.write_str(&self.subject)
        }
    }
}
