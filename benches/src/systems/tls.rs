//! What the TLS systems share: a CA and a server certificate for `localhost`, made at run time
//! in memory (nothing secret is committed, nothing is written to disk), and the cipher's
//! ceiling, `aes_gcm_1core`.
//!
//! Both `zcrpc_*_tls` and `tonic_tls` use rustls with the `ring` provider and its defaults, so
//! both negotiate TLS 1.3 with `TLS13_AES_256_GCM_SHA384`, the first suite of the provider's
//! list; the ceiling seals records with the same AEAD.

use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::meter::{Meter, Sample, Timing};
use crate::placement::{spawn_on, Placement};
use crate::scenario::Shape;

/// The name the server certificate is valid for, and the name clients dial.
pub const SERVER_NAME: &str = "localhost";

/// A CA and a server certificate it signed, as PEM.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA's certificate: what clients trust.
    pub ca: String,
    /// The server's certificate.
    pub cert: String,
    /// The server's private key.
    pub key: String,
}

impl Certs {
    /// A fresh CA and a certificate for [`SERVER_NAME`] signed by it.
    pub fn generate() -> Result<Certs, String> {
        let bad = |e: rcgen::Error| format!("generating test certificates: {e}");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "zcrpc bench CA");
        let ca_key = rcgen::KeyPair::generate().map_err(bad)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(bad)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().map_err(bad)?;
        let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(bad)?
            .signed_by(&key, &issuer)
            .map_err(bad)?;
        Ok(Certs {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// The record size the ceiling seals: TLS's largest plaintext record, the size rustls cuts
/// bulk data into.
pub const RECORD: usize = 16 << 10;

/// One core sealing `shape.payload`-sized units in 16 KiB records with AES-256-GCM in place,
/// on the client's CPU, for the measurement's time: the most bytes per second one side of a
/// TLS connection can encrypt (decryption costs the same), with no network and no copy. Each
/// "call" is one payload of the scenario's size.
pub fn run_ceiling(shape: Shape, placement: Placement, timing: Timing) -> Result<Sample, String> {
    let payload = shape.request_len.max(shape.response_len);
    let worker = spawn_on("bench-client", placement.client_cpu, move || {
        let key = UnboundKey::new(&AES_256_GCM, &[0x42; 32]).map_err(|_| "AES-256-GCM key")?;
        let key = LessSafeKey::new(key);
        let mut record = vec![0xA5u8; RECORD];
        let mut meter = Meter::new(timing, false);
        let mut sequence = 0u64;
        loop {
            let started = Instant::now();
            let mut left = payload;
            while left > 0 {
                let n = left.min(RECORD);
                // A TLS 1.3 nonce is the IV XOR the record's sequence number: never reused.
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&sequence.to_be_bytes());
                sequence += 1;
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from([23u8, 3, 3, 0x40, 0x11]),
                        &mut record[..n],
                    )
                    .map_err(|_| "AES-256-GCM seal failed".to_string())?;
                std::hint::black_box(tag.as_ref());
                left -= n;
            }
            if !meter.complete(started) {
                return Ok(meter.finish());
            }
        }
    });
    worker
        .join()
        .map_err(|_| "the cipher thread panicked".to_string())?
}
