//! Connection tokens (`chat_core::token`): `TokenKey::verify` on any string never panics, and for
//! any valid claims `verify(mint(claims))` gives the claims back, while every token that differs
//! from a minted one in a single byte, any strict prefix of one, and one minted under another
//! secret are refused.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use chat_core::domain::{RoomName, UserName};
use chat_core::token::{Claims, TokenError, TokenKey, decode_hex, encode_hex};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    secret: Vec<u8>,
    sub: &'a str,
    exp: i64,
    iat: i64,
    rooms: Option<Vec<&'a str>>,
    op: bool,
    /// What a flipped byte becomes (picked per position from the token's alphabet).
    flip: u8,
    /// Where a truncated copy ends.
    cut: usize,
    now: i64,
    /// Anything else a client may send as `?token=`.
    garbage: &'a str,
}

/// What a changed byte becomes: the characters a token is made of, and a few it is not.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ v";

fuzz_target!(|input: Input<'_>| {
    let key = match TokenKey::new(input.secret.clone()) {
        Ok(key) => key,
        Err(_) => {
            assert!(input.secret.len() < TokenKey::MIN_LEN);
            return;
        }
    };
    // Whatever the client sends: an answer, never a panic.
    let _ = key.verify(input.garbage, input.now);
    // The secret's hex form (how it is stored) round-trips.
    assert_eq!(
        decode_hex(&encode_hex(&input.secret)).as_deref(),
        Some(&input.secret[..])
    );

    // Valid claims only: names the domain refuses could not be in a minted token.
    let Ok(sub) = UserName::parse(input.sub) else {
        return;
    };
    let rooms = input.rooms.map(|rooms| {
        rooms
            .into_iter()
            .filter_map(|r| RoomName::parse(r).ok())
            .collect::<BTreeSet<_>>()
    });
    if input.exp == i64::MIN {
        return; // expired at any time
    }
    let claims = Claims {
        sub,
        exp: input.exp,
        iat: input.iat,
        rooms,
        op: input.op,
    };
    let token = key.mint(&claims);
    let before = input.exp - 1;
    assert_eq!(key.verify(&token, before).as_ref(), Ok(&claims), "{token}");
    assert!(
        matches!(
            key.verify(&token, input.exp),
            Err(TokenError::Expired { .. })
        ),
        "{token}"
    );

    // One byte different, anywhere: refused.
    let bytes = token.as_bytes();
    for i in 0..bytes.len() {
        let to = ALPHABET[(usize::from(input.flip) + i) % ALPHABET.len()];
        if to == bytes[i] {
            continue;
        }
        let mut flipped = bytes.to_vec();
        flipped[i] = to;
        let flipped = String::from_utf8(flipped).expect("ASCII stays UTF-8");
        let verdict = key.verify(&flipped, before);
        assert!(
            verdict.is_err(),
            "byte {i} changed to {:?} and still accepted: {flipped} (minted {token})",
            to as char
        );
    }
    // A strict prefix: refused.
    let cut = input.cut % bytes.len();
    assert!(
        key.verify(&token[..cut], before).is_err(),
        "prefix {cut} of {token}"
    );
    // Another secret: refused as a bad signature.
    let mut other = input.secret.clone();
    other[0] ^= 1;
    let other = TokenKey::new(other).expect("as long as the first");
    assert_eq!(
        other.verify(&token, before),
        Err(TokenError::BadSignature),
        "{token}"
    );
});
