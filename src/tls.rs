//! TLS termination for `listen.https`: certificates and keys loaded from PEM files, the one
//! chosen for each handshake by SNI, and the rustls server config (TLS 1.2 and 1.3, ALPN `h2`
//! and `http/1.1`). The loaded certificates sit behind an `ArcSwap`, so a reload changes what
//! new handshakes get and never touches an established connection. Loading is done by the
//! change path (start, SIGHUP, the API), which refuses a bad file and keeps the old ones; this
//! room never decides when to load.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::config::{CertificatePair, ConfigError, ConfigErrors, TlsSettings};
use crate::route::table::{Target, UpstreamTls};
use crate::route::Table;

/// How close to its expiry a certificate is named in a warning by `veer check`.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The certificates of `[tls]`, loaded and checked: each with the names it serves.
#[derive(Debug)]
pub struct Certificates {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    key: Arc<CertifiedKey>,
    /// DNS names from the certificate's subject alternative names, lower case; a wildcard
    /// keeps its `*.` prefix.
    names: Vec<String>,
    /// Seconds since the epoch after which the certificate is no longer valid.
    not_after: i64,
    file: String,
}

impl Certificates {
    /// The certificate for a client asking for `name`: an exact name first, then a wildcard
    /// covering its first label, else the first certificate configured (also for a client
    /// that sends no SNI).
    pub fn choose(&self, name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let chosen = name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let exact = self.entries.iter().find(|e| e.names.contains(&name));
            exact.or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.entries.iter().find(|e| {
                    e.names
                        .iter()
                        .any(|n| n.strip_prefix("*.").is_some_and(|p| p == parent))
                })
            })
        });
        chosen.or_else(|| self.entries.first()).map(|e| &e.key)
    }

    /// One warning for each certificate that expires within `within` of `now` (or already
    /// has), naming its file.
    pub fn expiry_warnings(&self, now: SystemTime, within: Duration) -> Vec<String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let horizon = now.saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
        self.entries
            .iter()
            .filter(|e| e.not_after <= horizon)
            .map(|e| {
                let days = (e.not_after - now) / 86_400;
                if e.not_after <= now {
                    format!("{}: the certificate has expired", e.file)
                } else {
                    format!("{}: the certificate expires in {days} days", e.file)
                }
            })
            .collect()
    }
}

/// The certificates new handshakes use; swapped whole by a reload.
#[derive(Debug, Default)]
pub struct Store {
    current: ArcSwapOption<Certificates>,
}

impl Store {
    pub fn set(&self, certificates: Option<Arc<Certificates>>) {
        self.current.store(certificates);
    }

    pub fn get(&self) -> Option<Arc<Certificates>> {
        self.current.load_full()
    }
}

/// Chooses each handshake's certificate from the store as it is at that moment.
#[derive(Debug)]
struct Resolver(Arc<Store>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certificates = self.0.current.load();
        certificates.as_ref()?.choose(hello.server_name()).cloned()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of `listen.https`: TLS 1.2 and 1.3 with the provider's default (strong)
/// cipher suites, ALPN `h2` then `http/1.1`, certificates from `store`.
pub fn acceptor(store: Arc<Store>) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Loads every certificate of `[tls]`: each file must exist and parse, and each key must match
/// its certificate. Errors name the field, the file and the reason; all are collected.
pub fn load(settings: Option<&TlsSettings>) -> Result<Option<Arc<Certificates>>, ConfigErrors> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let provider = provider();
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, pair) in settings.certificates.iter().enumerate() {
        match load_pair(pair, &provider) {
            Ok(entry) => entries.push(entry),
            Err((field, message)) => errors.push(ConfigError {
                location: None,
                path: format!("tls.certificates[{i}].{field}"),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(Some(Arc::new(Certificates { entries })))
    } else {
        Err(ConfigErrors(errors))
    }
}

type PairError = (&'static str, String);

fn load_pair(pair: &CertificatePair, provider: &CryptoProvider) -> Result<Entry, PairError> {
    let cert_file = pair.cert.display().to_string();
    let key_file = pair.key.display().to_string();
    let chain =
        read_chain(&pair.cert).map_err(|reason| ("cert", format!("{cert_file}: {reason}")))?;
    let key = read_key(&pair.key).map_err(|reason| ("key", format!("{key_file}: {reason}")))?;
    let (names, not_after) =
        describe(&chain[0]).map_err(|reason| ("cert", format!("{cert_file}: {reason}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ("key", format!("{key_file}: unusable private key: {e}")))?;
    let key = CertifiedKey::new(chain, signing);
    if let Err(e) = key.keys_match() {
        return Err((
            "key",
            format!("{key_file}: the key does not match the certificate in {cert_file} ({e})"),
        ));
    }
    Ok(Entry {
        key: Arc::new(key),
        names,
        not_after,
        file: cert_file,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the file (expected PEM `BEGIN CERTIFICATE`)".into());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no private key in the file (expected PEM `BEGIN PRIVATE KEY`)".to_string()
        }
        e => format!("not a PEM private key file: {e}"),
    })
}

/// The DNS names a certificate serves and when it expires.
fn describe(cert: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok((names, parsed.validity().not_after.timestamp()))
}

/// A pool's TLS to its servers (`pools.NAME.tls`): the rustls client with the pool's roots and
/// client certificate, and the server name to ask for when the pool sets one.
#[derive(Clone)]
pub struct UpstreamClient {
    connector: tokio_rustls::TlsConnector,
    sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// A pool's TLS as the snapshot holds it: the client, or why its files could not be loaded
/// (then every connection fails; never plain text where TLS was asked for).
pub type UpstreamTlsSlot = Option<Result<UpstreamClient, Arc<str>>>;

impl UpstreamClient {
    /// TLS over `tcp`, verifying the server as `sni`, else as the host (or address) of `target`.
    pub async fn connect(
        &self,
        target: &Target,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match (&self.sni, target) {
            (Some(name), _) => name.clone(),
            (None, Target::Addr(addr)) => ServerName::IpAddress(addr.ip().into()),
            (None, Target::Name { host, .. }) => ServerName::try_from(host.to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        self.connector.connect(name, tcp).await
    }
}

/// The TLS clients of `table`'s pools, index for index; errors name the field, the file and
/// the reason.
pub fn upstream_clients(table: &Table) -> Result<Vec<UpstreamTlsSlot>, ConfigErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for pool in &table.pools {
        let Some(t) = &pool.tls else {
            out.push(None);
            continue;
        };
        match upstream_client(t) {
            Ok(client) => out.push(Some(Ok(client))),
            Err((field, message)) => {
                errors.push(ConfigError {
                    location: None,
                    path: format!("pools.{}.tls.{field}", pool.name),
                    message: message.clone(),
                });
                out.push(Some(Err(message.into())));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// As `upstream_clients`, keeping a pool whose files fail as an error that fails its
/// connections (the change path refused such a config; a file broken since is caught here).
pub fn upstream_slots(table: &Table) -> Vec<UpstreamTlsSlot> {
    table
        .pools
        .iter()
        .map(|pool| {
            pool.tls.as_ref().map(|t| {
                upstream_client(t).map_err(|(field, message)| {
                    tracing::error!(pool = %pool.name, field, "upstream TLS unusable: {message}");
                    Arc::from(message)
                })
            })
        })
        .collect()
}

fn upstream_client(t: &UpstreamTls) -> Result<UpstreamClient, PairError> {
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca {
        Some(ca) => {
            let file = ca.display().to_string();
            for cert in read_chain(ca).map_err(|reason| ("ca", format!("{file}: {reason}")))? {
                roots
                    .add(cert)
                    .map_err(|e| ("ca", format!("{file}: not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(("ca", "no system root certificates found; set `ca`".into()));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("ca", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            let cert_file = cert.display().to_string();
            let key_file = key.display().to_string();
            let chain =
                read_chain(cert).map_err(|reason| ("cert", format!("{cert_file}: {reason}")))?;
            let der = read_key(key).map_err(|reason| ("key", format!("{key_file}: {reason}")))?;
            let signing = provider()
                .key_provider
                .load_private_key(der)
                .map_err(|e| ("key", format!("{key_file}: unusable private key: {e}")))?;
            let certified = CertifiedKey::new(chain, signing);
            if let Err(e) = certified.keys_match() {
                return Err((
                    "key",
                    format!(
                        "{key_file}: the key does not match the certificate in {cert_file} ({e})"
                    ),
                ));
            }
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified,
            )))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let sni = match t.sni.as_deref() {
        Some(name) => Some(
            ServerName::try_from(name.to_string())
                .map_err(|e| ("sni", format!("{name:?} is not a server name: {e}")))?,
        ),
        None => None,
    };
    Ok(UpstreamClient {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        sni,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str]) -> Entry {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = rcgen::CertificateParams::new(vec!["x.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .clone();
        let signing = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::try_from(key.serialize_der()).unwrap())
            .unwrap();
        Entry {
            key: Arc::new(CertifiedKey::new(vec![der], signing)),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 1_000_000,
            file: format!("{}.pem", names.first().unwrap_or(&"none")),
        }
    }

    #[test]
    fn sni_prefers_an_exact_name_then_a_wildcard_then_the_first() {
        let certs = Certificates {
            entries: vec![
                entry(&["default.test"]),
                entry(&["*.example.test"]),
                entry(&["api.example.test"]),
            ],
        };
        let pick = |name| {
            let chosen = certs.choose(name).unwrap();
            certs
                .entries
                .iter()
                .position(|e| Arc::ptr_eq(&e.key, chosen))
                .unwrap()
        };
        assert_eq!(pick(Some("api.example.test")), 2);
        assert_eq!(pick(Some("API.Example.Test.")), 2);
        assert_eq!(pick(Some("www.example.test")), 1);
        // A wildcard covers one label only.
        assert_eq!(pick(Some("a.b.example.test")), 0);
        assert_eq!(pick(Some("example.test")), 0);
        assert_eq!(pick(None), 0);
    }

    #[test]
    fn expiry_within_the_window_is_named() {
        let certs = Certificates {
            entries: vec![entry(&["a.test"])],
        };
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let window = Duration::from_secs(10 * 86_400);
        assert!(certs.expiry_warnings(at(0), window).is_empty());
        let soon = certs.expiry_warnings(at(1_000_000 - 2 * 86_400), window);
        assert_eq!(soon, vec!["a.test.pem: the certificate expires in 2 days"]);
        let past = certs.expiry_warnings(at(2_000_000), window);
        assert_eq!(past, vec!["a.test.pem: the certificate has expired"]);
    }
}
