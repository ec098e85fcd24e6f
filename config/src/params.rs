// SPDX-License-Identifier: Apache-2.0 OR MIT
//! One config entry (`{"method": ..., "params": {...}}`) and typed access to its
//! parameters, every error naming the method and the parameter.

use crate::Error;
use serde_json::{Map, Value};

pub(crate) struct Params<'a> {
    pub(crate) method: &'a str,
    params: &'a Map<String, Value>,
    path: &'a str,
}

static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

impl<'a> Params<'a> {
    pub(crate) fn of(entry: &'a Value, path: &'a str) -> Result<Params<'a>, Error> {
        let method = entry.get("method").and_then(Value::as_str).unwrap_or("");
        if method.is_empty() {
            return Err(Error::file(
                path,
                format!("a config entry has no \"method\": {entry}"),
            ));
        }
        let params = match entry.get("params") {
            None | Some(Value::Null) => EMPTY.get_or_init(Map::new),
            Some(Value::Object(m)) => m,
            Some(v) => {
                return Err(Error {
                    path: path.to_string(),
                    method: Some(method.to_string()),
                    param: None,
                    message: format!("\"params\" is {v}, not an object"),
                })
            }
        };
        Ok(Params {
            method,
            params,
            path,
        })
    }

    /// The config file's name.
    pub(crate) fn path(&self) -> &str {
        self.path
    }

    /// An error about parameter `param` of this entry.
    pub(crate) fn err(&self, param: &str, why: impl Into<String>) -> Error {
        Error {
            path: self.path.to_string(),
            method: Some(self.method.to_string()),
            param: Some(param.to_string()),
            message: why.into(),
        }
    }

    /// An error about the entry as a whole (its method).
    pub(crate) fn refuse(&self, why: impl Into<String>) -> Error {
        Error {
            path: self.path.to_string(),
            method: Some(self.method.to_string()),
            param: None,
            message: why.into(),
        }
    }

    /// The raw value of `key`, if present and not null.
    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        self.params.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, Error> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, found {v}"))),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected an integer, found {v}"))),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    pub(crate) fn required(&self, key: &str) -> Result<&'a str, Error> {
        self.str(key)?
            .ok_or_else(|| self.err(key, "missing (it is required)"))
    }

    /// The parameters not in `known` (those read, and those that mean nothing here
    /// whatever their value) must be at SPDK's default, as `defaults` lists it: any
    /// other value is refused, and so is a parameter listed nowhere.
    pub(crate) fn check_rest(
        &self,
        known: &[&str],
        defaults: &[(&str, Value, &str)],
    ) -> Result<(), Error> {
        for (k, v) in self.params {
            if known.contains(&k.as_str()) || v.is_null() {
                continue;
            }
            match defaults.iter().find(|(d, _, _)| d == k) {
                Some((_, def, _)) if def == v => {}
                Some((_, def, why)) => {
                    return Err(self.err(
                        k,
                        format!(
                            "{v} is not supported: {why}; remove it or give SPDK's default, {def}"
                        ),
                    ))
                }
                None => {
                    return Err(self.err(
                        k,
                        format!(
                            "not a parameter of {} in SPDK v23.01.1, and not read here; remove it",
                            self.method
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}
