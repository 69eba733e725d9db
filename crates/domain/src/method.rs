//! The request method as a type, so that the rules ask it what it is
//! (`is_safe`, `is_read_only`) instead of comparing strings in many places.

use std::fmt;

/// An HTTP request method. Methods are case-sensitive (RFC 9110 §9.1): `get`
/// is not `GET` but an extension method, and is treated as unsafe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `CONNECT`
    Connect,
    /// Any other token, as sent.
    Other(String),
}

impl Method {
    /// The method named by `name`, exactly as spelled.
    pub fn new(name: &str) -> Self {
        match name {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            "TRACE" => Self::Trace,
            "CONNECT" => Self::Connect,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The method's name as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Connect => "CONNECT",
            Self::Other(name) => name,
        }
    }

    /// Safe in the CSRF sense: a browser sends it cross-site without asking,
    /// so it must change nothing (`GET`, `HEAD`, `OPTIONS`).
    pub fn is_safe(&self) -> bool {
        matches!(self, Self::Get | Self::Head | Self::Options)
    }

    /// Accepted by a read-only route (`GET`, `HEAD`): the session, the
    /// operator endpoints, the web app's files.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Self::Get | Self::Head)
    }
}

impl From<&str> for Method {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for Method {
    fn from(name: String) -> Self {
        match Self::new(&name) {
            Self::Other(_) => Self::Other(name),
            known => known,
        }
    }
}

impl PartialEq<str> for Method {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Method {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_keep_their_spelling_and_say_what_they_are() {
        // (name, safe, read-only)
        let cases = [
            ("GET", true, true),
            ("HEAD", true, true),
            ("OPTIONS", true, false),
            ("POST", false, false),
            ("PUT", false, false),
            ("PATCH", false, false),
            ("DELETE", false, false),
            ("TRACE", false, false),
            ("CONNECT", false, false),
            ("PROPFIND", false, false),
            ("get", false, false),
        ];
        for (name, safe, read_only) in cases {
            let method = Method::new(name);
            assert_eq!(method.as_str(), name);
            assert_eq!(Method::from(name.to_owned()), method);
            assert_eq!(
                (method.is_safe(), method.is_read_only()),
                (safe, read_only),
                "{name}"
            );
        }
        assert_eq!(Method::new("get"), Method::Other("get".into()));
    }
}
