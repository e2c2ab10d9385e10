//! The service address (the handshake's wire format is `runtime/wire.rs`,
//! shared with spawned children's control sockets).

use crate::runtime::ServiceError;
pub(crate) use crate::runtime::wire::{MESSAGE_LEN, Message, Refusal};

/// Longest service name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a valid service name: 1 to [`MAX_NAME_LEN`] bytes of
/// ASCII letters, digits and `._-:@`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b))
}

/// The abstract socket name (without its leading NUL) that serves `name`
/// for user `uid`: `remora.<uid>.<name>`. The uid keeps two users' services
/// of the same name apart (and makes another user's squatter visible as
/// such: the client checks the server's uid anyway).
pub(crate) fn address(name: &str, uid: u32) -> Result<Vec<u8>, ServiceError> {
    if !valid_name(name) {
        return Err(ServiceError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(format!("remora.{uid}.{name}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(address("my-service.v1", 1000).is_ok());
        assert_eq!(address("a", 7).unwrap(), b"remora.7.a");
        for bad in ["", "a/b", "a b", "a\0b", &"x".repeat(65)] {
            assert!(matches!(
                address(bad, 0),
                Err(ServiceError::InvalidName { .. })
            ));
        }
    }
}
