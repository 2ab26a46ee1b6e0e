//! The parsers of single values that every section uses: secrets and files, addresses,
//! networks, durations, quotas and port ranges, each error naming its key.

use super::*;

/// `secret` or `secret_file`: at most one of them; the file's contents are trimmed.
pub(super) fn secret_pair(
    (key, value): (&str, Option<String>),
    (file_key, file): (&str, Option<PathBuf>),
    base: &Path,
) -> Result<Option<Secret>> {
    let secret = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key,
                format!("set either {key} or {file_key}, not both"),
            ))
        }
        (None, None) => return Ok(None),
        (Some(value), None) => value,
        (None, Some(file)) => {
            let path = resolve(base, &file);
            let text = fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(file_key, format!("cannot read `{}`: {e}", path.display()))
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(ConfigError::new(
                    file_key,
                    format!("`{}` is empty", path.display()),
                ));
            }
            return Ok(Some(Secret(text.to_owned())));
        }
    };
    if secret.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(Some(Secret(secret)))
}

pub(super) fn tls_files(
    section: &'static str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    base: &Path,
) -> Result<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: resolve(base, &cert),
            key: resolve(base, &key),
            section,
        })),
        (Some(_), None) => Err(ConfigError::new(
            format!("{section}.tls_key"),
            format!("required with {section}.tls_cert"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            format!("{section}.tls_cert"),
            format!("required with {section}.tls_key"),
        )),
    }
}

/// `a, b` for messages.
pub fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

pub(super) fn socket_addr(key: &str, s: &str) -> Result<SocketAddr> {
    s.trim().parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("`{s}` is not an ip:port address like \"0.0.0.0:3478\" or \"[::]:3478\""),
        )
    })
}

pub(super) fn socket_addrs(key: &str, list: &[String]) -> Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let addr = socket_addr(&format!("{key}[{i}]"), s)?;
        if addrs.contains(&addr) {
            return Err(ConfigError::new(
                format!("{key}[{i}]"),
                format!("`{addr}` is listed twice"),
            ));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

pub(super) fn ip(key: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("`{s}` is not an IP address")))
}

/// A list of networks (`Cidr`) or `allow_peers` entries (`PeerRange`), each error naming
/// its index.
pub(super) fn cidrs<T: std::str::FromStr<Err = CidrError>>(
    key: &str,
    list: &[String],
) -> Result<Vec<T>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<T>()
                .map_err(|e| ConfigError::new(format!("{key}[{i}]"), e.to_string()))
        })
        .collect()
}

pub(super) fn duration(key: &str, s: Option<String>) -> Result<Option<Duration>> {
    let Some(s) = s else { return Ok(None) };
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        ConfigError::new(
            key,
            format!("`{s}` is not a duration like \"24h\" or \"90s\": {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(Some(d))
}

/// An error unless `d` is at most `max`: "at most <max>", then `why`.
pub(super) fn at_most(key: &str, d: Duration, max: Duration, why: &str) -> Result<()> {
    if d <= max {
        return Ok(());
    }
    Err(ConfigError::new(
        key,
        format!("at most {}{why}", humantime::format_duration(max)),
    ))
}

/// A quota as set, if set: at least 1.
pub(super) fn quota(key: &str, value: Option<u32>) -> Result<Option<u32>> {
    match value {
        Some(0) => Err(ConfigError::new(
            key,
            "must be at least 1 (0 would refuse every allocation)",
        )),
        value => Ok(value),
    }
}

/// `"lo-hi"`, with `lo <= hi` and, outside dev mode, `lo >= 1024`.
pub(super) fn port_range(key: &str, s: &str, dev: bool) -> Result<RangeInclusive<u16>> {
    let bad = || {
        ConfigError::new(
            key,
            format!("`{s}` is not a port range like \"49152-65535\""),
        )
    };
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(ConfigError::new(
            key,
            format!("`{s}`: the first port must be at least 1 and not above the last"),
        ));
    }
    if lo < 1024 && !dev {
        return Err(ConfigError::new(
            key,
            format!("`{s}` starts below 1024, among the system ports; use e.g. \"49152-65535\""),
        ));
    }
    Ok(lo..=hi)
}
