//! Helpers shared by the reliability and load tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use zcrpc_examples::child::ServerProcess;
use zcrpc_examples::TransportChoice;

/// A hang shows up as a failure after this, never as a stuck CI job.
pub const HANG: Duration = Duration::from_secs(10);

/// The `echo` example binary, which `cargo test` builds next to the tests.
pub fn echo_bin() -> PathBuf {
    // target/<profile>/deps/<test>-* → target/<profile>/examples/echo
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join("echo");
    assert!(bin.exists(), "{} not built (run through cargo test)", bin.display());
    bin
}

/// The name `echo --transport` takes.
pub fn name(t: TransportChoice) -> &'static str {
    t.name()
}

/// `echo serve` on 127.0.0.1 over `t`, in a child process.
pub fn spawn_server(t: TransportChoice) -> ServerProcess {
    spawn_server_with(t, &[])
}

/// [`spawn_server`] with more `echo serve` options.
pub fn spawn_server_with(t: TransportChoice, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--transport", name(t)];
    args.extend_from_slice(extra);
    ServerProcess::spawn(&echo_bin(), &args).unwrap()
}

/// Waits until `f` holds, polling every 20 ms, up to `limit`; `false` if it never did.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// `fut`, or a panic naming `what` if it takes longer than [`HANG`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {HANG:?}"),
    }
}

/// A CA, a `localhost` server certificate, a client certificate and a revoked one
/// (`revoked.pem`, named by the CA's revocation list `clients.crl`), as PEM files in a fresh
/// directory (made at run time: nothing secret is committed).
pub fn tls_files(tag: &str) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("zcrpc-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let certs = [
        ("server", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ("revoked", ExtendedKeyUsagePurpose::ClientAuth),
    ];
    for (serial, (name, usage)) in (1u64..).zip(certs) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(3u64),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    std::fs::write(dir.join("clients.crl"), crl.signed_by(&issuer).unwrap().pem().unwrap()).unwrap();
    dir
}
