//! Hostile input against the local backend, as a table: client frames, upgrade requests,
//! Management API requests and raw bytes on the port. Every case must get the documented answer
//! (docs/protocol.md §2, §5, §10–§12), leave the socket open where API Gateway keeps it open,
//! and store nothing; after the whole table the backend still serves everyone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chat_core::domain::{RoomName, UserName};
use chat_core::ports::Clock;
use chat_core::token::{Claims, TokenKey};
use chatctl_e2e::{Client, TestServer, http, raw_http};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// A server whose rate limit the table cannot reach: the cases test parsing, not the limiter.
async fn server(anonymous: bool) -> TestServer {
    TestServer::start_with(|c| {
        c.allow_anonymous = anonymous;
        c.chat.rate_limit = chat_core::policy::RateLimit {
            per_second: 10_000.0,
            burst: 10_000.0,
        };
    })
    .await
}

fn nested(depth: usize) -> String {
    format!(
        r#"{{"action":"send","room":"lobby","text":"deep","extra":{}1{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// Frames a connection in `lobby` sends; each is answered with an `error` of this code, and the
/// socket stays open.
fn frame_cases() -> Vec<(&'static str, Message, &'static str)> {
    let text = |v: Value| Message::text(v.to_string());
    let raw = |s: &str| Message::text(s.to_owned());
    vec![
        ("not JSON", raw("{this is not json"), "bad_request"),
        ("empty frame", raw(""), "bad_request"),
        ("white space", raw(" \n\t "), "bad_request"),
        ("JSON array", raw("[1,2,3]"), "bad_request"),
        ("JSON string", raw(r#""send""#), "bad_request"),
        ("JSON null", raw("null"), "bad_request"),
        ("JSON number", raw("42"), "bad_request"),
        (
            "trailing garbage",
            raw(r#"{"action":"ping"} x"#),
            "bad_request",
        ),
        (
            "byte order mark",
            raw("\u{feff}{\"action\":\"ping\"}"),
            "bad_request",
        ),
        ("no action", text(json!({})), "bad_request"),
        (
            "action is a number",
            text(json!({"action": 5})),
            "bad_request",
        ),
        (
            "action is null",
            text(json!({"action": null})),
            "bad_request",
        ),
        (
            "action is an object",
            text(json!({"action": {"send": true}})),
            "bad_request",
        ),
        (
            "unknown action",
            text(json!({"action": "teleport"})),
            "unknown_action",
        ),
        (
            "action in capitals",
            text(json!({"action": "SEND"})),
            "unknown_action",
        ),
        (
            "action with a space",
            text(json!({"action": " send"})),
            "unknown_action",
        ),
        (
            "$connect as an action",
            text(json!({"action": "$connect"})),
            "unknown_action",
        ),
        (
            "$disconnect as an action",
            text(json!({"action": "$disconnect"})),
            "unknown_action",
        ),
        (
            "$default as an action",
            text(json!({"action": "$default"})),
            "unknown_action",
        ),
        (
            "send without text",
            text(json!({"action":"send","room":"lobby"})),
            "bad_request",
        ),
        (
            "send without room",
            text(json!({"action":"send","text":"x"})),
            "bad_request",
        ),
        (
            "room is a number",
            text(json!({"action":"send","room":5,"text":"x"})),
            "bad_request",
        ),
        (
            "room is an array",
            text(json!({"action":"send","room":["lobby"],"text":"x"})),
            "bad_request",
        ),
        (
            "text is an array",
            text(json!({"action":"send","room":"lobby","text":["x"]})),
            "bad_request",
        ),
        (
            "text is an object",
            text(json!({"action":"send","room":"lobby","text":{"x":1}})),
            "bad_request",
        ),
        (
            "text is a number",
            text(json!({"action":"send","room":"lobby","text":7})),
            "bad_request",
        ),
        (
            "blank text",
            text(json!({"action":"send","room":"lobby","text":"  \n "})),
            "bad_request",
        ),
        (
            "room of 65 characters",
            text(json!({"action":"send","room":"r".repeat(65),"text":"x"})),
            "bad_request",
        ),
        (
            "room with a slash",
            text(json!({"action":"send","room":"../lobby","text":"x"})),
            "bad_request",
        ),
        (
            "room with a NUL",
            text(json!({"action":"send","room":"lob\u{0}by","text":"x"})),
            "bad_request",
        ),
        (
            "empty room",
            text(json!({"action":"send","room":"","text":"x"})),
            "bad_request",
        ),
        (
            "clientMsgId of 129 characters",
            text(json!({"action":"send","room":"lobby","text":"x","clientMsgId":"c".repeat(129)})),
            "bad_request",
        ),
        (
            "clientMsgId with a control character",
            text(json!({"action":"send","room":"lobby","text":"x","clientMsgId":"a\u{7}b"})),
            "bad_request",
        ),
        (
            "clientMsgId is a number",
            text(json!({"action":"send","room":"lobby","text":"x","clientMsgId":12})),
            "bad_request",
        ),
        (
            "text over 4096 bytes",
            text(json!({"action":"send","room":"lobby","text":"é".repeat(2049)})),
            "too_large",
        ),
        (
            "lone high surrogate",
            raw(r#"{"action":"send","room":"lobby","text":"\ud800"}"#),
            "bad_request",
        ),
        (
            "lone low surrogate",
            raw(r#"{"action":"send","room":"lobby","text":"a\udc00b"}"#),
            "bad_request",
        ),
        (
            "arrays nested 10,000 deep",
            Message::text(nested(10_000)),
            "bad_request",
        ),
        (
            "objects nested 200 deep",
            raw(&format!("{}{}", r#"{"a":"#.repeat(200), "}".repeat(200))),
            "bad_request",
        ),
        (
            "send to a room not joined",
            text(json!({"action":"send","room":"elsewhere","text":"x"})),
            "forbidden",
        ),
        (
            "history limit 0",
            text(json!({"action":"history","room":"lobby","limit":0})),
            "bad_request",
        ),
        (
            "history limit 101",
            text(json!({"action":"history","room":"lobby","limit":101})),
            "bad_request",
        ),
        (
            "history limit negative",
            text(json!({"action":"history","room":"lobby","limit":-1})),
            "bad_request",
        ),
        (
            "history limit a string",
            text(json!({"action":"history","room":"lobby","limit":"ten"})),
            "bad_request",
        ),
        (
            "history limit a fraction",
            text(json!({"action":"history","room":"lobby","limit":10.5})),
            "bad_request",
        ),
        (
            "history limit huge",
            raw(r#"{"action":"history","room":"lobby","limit":1e400}"#),
            "bad_request",
        ),
        (
            "history before not a ULID",
            text(json!({"action":"history","room":"lobby","before":"yesterday"})),
            "bad_request",
        ),
        (
            "history before and after",
            text(
                json!({"action":"history","room":"lobby","before":"01HZZZZZZZZZZZZZZZZZZZZZZZ","after":"01HZZZZZZZZZZZZZZZZZZZZZZZ"}),
            ),
            "bad_request",
        ),
        (
            "history after past the ULID range",
            text(json!({"action":"history","room":"lobby","after":"8ZZZZZZZZZZZZZZZZZZZZZZZZZ"})),
            "bad_request",
        ),
        (
            "recall of an empty id",
            text(json!({"action":"recall","id":""})),
            "bad_request",
        ),
        (
            "recall of an id that is no ULID",
            text(json!({"action":"recall","id":"../../etc/passwd"})),
            "bad_request",
        ),
        (
            "recall of an unknown id",
            text(json!({"action":"recall","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"})),
            "not_found",
        ),
        (
            "leave a room not joined",
            text(json!({"action":"leave","room":"elsewhere"})),
            "not_found",
        ),
        (
            "join a bad room",
            text(json!({"action":"join","room":"no spaces"})),
            "bad_request",
        ),
        (
            "presence of a bad room",
            text(json!({"action":"presence","room":""})),
            "bad_request",
        ),
        (
            "binary frame",
            Message::binary(vec![0xff, 0x00, 0x13, 0x37]),
            "bad_request",
        ),
        (
            "binary frame holding JSON",
            Message::binary(
                json!({"action":"send","room":"lobby","text":"sneaky"})
                    .to_string()
                    .into_bytes(),
            ),
            "bad_request",
        ),
        (
            "empty binary frame",
            Message::binary(Vec::new()),
            "bad_request",
        ),
    ]
}

#[tokio::test]
async fn hostile_frames_get_the_documented_error_and_the_socket_stays_open() {
    let t = server(true).await;
    let mut ann = t.join("lobby", "ann").await;
    let cases = frame_cases();
    for (name, frame, code) in &cases {
        ann.send_raw(frame.clone()).await.unwrap();
        let answer = ann
            .recv_matching(name, |f| f["type"] == "error" || f["type"] == "ack")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(answer["code"], *code, "{name}: {answer}");
        assert!(
            !answer["message"].as_str().unwrap_or_default().is_empty(),
            "{name}: an error says why: {answer}"
        );
        // The socket is still open and still served.
        ann.send(json!({"action":"ping"})).await;
        ann.recv_type("pong")
            .await
            .unwrap_or_else(|e| panic!("{name}: no pong after it: {e:#}"));
    }
    // An error about a frame with a clientMsgId names it.
    ann.send(json!({"action":"send","room":"lobby","text":"x".repeat(5000),"clientMsgId":"big-1"}))
        .await;
    assert_eq!(ann.recv_type("error").await.unwrap()["ref"], "big-1");
    // Nothing was stored, and the connection is still the only one.
    ann.send(json!({"action":"history","room":"lobby"})).await;
    assert_eq!(
        ann.recv_type("history").await.unwrap()["messages"],
        json!([])
    );
    assert_eq!(t.connections().await.len(), 1);
    ann.say("lobby", "still here").await;
    assert!(
        cases.len() >= 50,
        "the frame table has {} cases",
        cases.len()
    );
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    // RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection; 1007 names why.
    let t = server(true).await;
    let mut ann = t.join("lobby", "ann").await;
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    ann.send_raw(Message::Frame(Frame::from_payload(
        header,
        vec![b'{', 0xc3, 0x28, b'}'].into(),
    )))
    .await
    .unwrap();
    let close = ann.closed().await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1007, "{close:?}");
    chatctl_e2e::eventually("the connection is gone", || async {
        t.connections().await.is_empty()
    })
    .await
    .unwrap();
}

/// An upgrade request with these headers (besides Host).
fn upgrade_request(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const VERSION: &str = "Sec-WebSocket-Version: 13";

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test]
async fn hostile_upgrades_are_refused_with_the_documented_status_and_register_nothing() {
    let anon = server(true).await;
    let signed = server(false).await;
    let key = chat_local::secret::load_or_create(signed.dir.path()).unwrap();
    let now_s = signed.clock.now_ms() / 1000;
    let claims = |exp: i64, rooms: Option<Vec<&str>>| Claims {
        sub: UserName::parse("ann").unwrap(),
        exp,
        iat: now_s,
        rooms: rooms.map(|r| r.into_iter().map(|n| RoomName::parse(n).unwrap()).collect()),
        op: false,
    };
    let good = key.mint(&claims(now_s + 60, None));
    let forged = TokenKey::new(b"not-the-server-secret-at-all".to_vec())
        .unwrap()
        .mint(&claims(now_s + 60, None));
    let expired = key.mint(&claims(now_s - 1, None));
    let other_room = key.mint(&claims(now_s + 60, Some(vec!["kitchen"])));
    let mut parts = good.split('.');
    let (version, body, mac) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let two_parts = format!("{version}.{body}");
    let four_parts = format!("{good}.{mac}");
    let v2 = good.replacen(version, "v2", 1);
    let not_base64 = format!("{version}.{body}!!.{mac}");

    // (case, anonymous server?, query, status)
    let long = "u".repeat(10_000);
    let cases: Vec<(&str, bool, String, u16)> = vec![
        ("no query", true, String::new(), 400),
        ("no room", true, "user=ann".into(), 400),
        ("empty room", true, "room=&user=ann".into(), 400),
        ("room with a slash", true, "room=a%2Fb&user=ann".into(), 400),
        (
            "room of 65 characters",
            true,
            format!("room={}&user=ann", "r".repeat(65)),
            400,
        ),
        (
            "room of 10,000 characters",
            true,
            format!("room={long}&user=ann"),
            400,
        ),
        (
            "room with broken percent-encoding",
            true,
            "room=%ZZ&user=ann".into(),
            400,
        ),
        (
            "room with a truncated escape",
            true,
            "room=lobby%2&user=ann".into(),
            400,
        ),
        ("user missing (anonymous)", true, "room=lobby".into(), 401),
        ("empty user", true, "room=lobby&user=".into(), 400),
        (
            "user with a control character",
            true,
            "room=lobby&user=a%07b".into(),
            400,
        ),
        (
            "user of white space only",
            true,
            "room=lobby&user=%20%20".into(),
            400,
        ),
        (
            "user of 65 characters",
            true,
            format!("room=lobby&user={}", "u".repeat(65)),
            400,
        ),
        (
            "user that is not UTF-8",
            true,
            "room=lobby&user=%E0%A4".into(),
            400,
        ),
        (
            "user that is a lone surrogate in CESU",
            true,
            "room=lobby&user=%ED%A0%80".into(),
            400,
        ),
        (
            "no token, anonymous off",
            false,
            "room=lobby&user=ann".into(),
            401,
        ),
        (
            "token that is not a token",
            false,
            "room=lobby&token=abc".into(),
            401,
        ),
        (
            "token of two parts",
            false,
            format!("room=lobby&token={two_parts}"),
            401,
        ),
        (
            "token of four parts",
            false,
            format!("room=lobby&token={four_parts}"),
            401,
        ),
        (
            "token of another version",
            false,
            format!("room=lobby&token={v2}"),
            401,
        ),
        (
            "token part not base64url",
            false,
            format!("room=lobby&token={not_base64}"),
            401,
        ),
        ("empty token", false, "room=lobby&token=".into(), 401),
        (
            "forged token",
            false,
            format!("room=lobby&token={forged}"),
            403,
        ),
        (
            "expired token",
            false,
            format!("room=lobby&token={expired}"),
            403,
        ),
        (
            "token for another room",
            false,
            format!("room=lobby&token={other_room}"),
            403,
        ),
        (
            "good token, bad room",
            false,
            format!("room=no%20spaces&token={good}"),
            400,
        ),
    ];
    for (name, anonymous, query, status) in &cases {
        let t = if *anonymous { &anon } else { &signed };
        let url = format!("{}?{query}", t.server().websocket_url());
        let refused = Client::try_connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let refused = match refused {
            Ok(_) => panic!("{name}: the upgrade was accepted"),
            Err(r) => r,
        };
        assert_eq!(refused.status, *status, "{name}: {}", refused.body);
        assert!(
            !refused.body.trim().is_empty(),
            "{name}: a refusal says why"
        );
    }

    // Requests that ask for a WebSocket but are not valid upgrades: 400, on / and on a stage.
    // (`Connection: Upgrade, close` so the server closes after its answer.)
    let lobby = "/?room=lobby&user=ann";
    let closing = "Connection: Upgrade, close";
    let broken: [(&str, Vec<&str>, u16); 8] = [
        ("no Sec-WebSocket-Key", vec![UPGRADE, closing, VERSION], 400),
        ("no Sec-WebSocket-Version", vec![UPGRADE, closing, KEY], 400),
        (
            "Sec-WebSocket-Version 8",
            vec![UPGRADE, closing, KEY, "Sec-WebSocket-Version: 8"],
            400,
        ),
        (
            "no Connection: Upgrade",
            vec![UPGRADE, "Connection: close", KEY, VERSION],
            400,
        ),
        (
            "Upgrade: h2c",
            vec!["Upgrade: h2c", closing, KEY, VERSION],
            200,
        ),
        (
            "upgrade in capitals, no key",
            vec!["Upgrade: WebSocket", closing, VERSION],
            400,
        ),
        (
            "two upgrade protocols, no key",
            vec!["Upgrade: foo, websocket", closing, VERSION],
            400,
        ),
        (
            "a valid upgrade",
            vec![UPGRADE, CONNECTION, KEY, VERSION],
            101,
        ),
    ];
    for (name, headers, status) in &broken {
        for path in [lobby.to_owned(), format!("/dev{lobby}")] {
            let request = upgrade_request(&path, headers);
            let answer = if *status == 101 {
                read_head(anon.addr(), &request).await
            } else {
                raw_http(anon.addr(), &request).await.unwrap()
            };
            // "Upgrade: h2c" is no WebSocket: / serves the page, a stage path says 426.
            let expected = match (*status, path.starts_with("/dev")) {
                (200, true) => 426,
                (s, _) => s,
            };
            assert_eq!(status_of(&answer), expected, "{name} on {path}: {answer}");
            if expected == 400 {
                assert!(
                    answer.contains("not a valid WebSocket upgrade"),
                    "{name}: {answer}"
                );
            }
        }
    }
    // POST is no upgrade, whatever its headers say.
    let post = raw_http(
        anon.addr(),
        format!("POST {lobby} HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n{closing}\r\n{KEY}\r\n{VERSION}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&post), 405, "{post}");

    // Only the valid upgrades registered a connection, and only while they were open.
    chatctl_e2e::eventually("the accepted raw upgrades are gone", || async {
        anon.connections().await.is_empty()
    })
    .await
    .unwrap();
    assert!(signed.connections().await.is_empty());
    assert!(cases.len() + broken.len() * 2 + 1 >= 40);
}

/// Send an upgrade and read only the response head (the socket stays open until dropped).
async fn read_head(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("an answer")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// (case, method, path, body, status, `x-amzn-errortype` or "" for none)
type ManagementCase = (
    &'static str,
    &'static str,
    String,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn hostile_management_api_requests_are_refused_and_change_nothing() {
    let t = server(true).await;
    let mut ann = t.join("lobby", "ann").await;
    let id = t.connections().await[0].id.as_str().to_owned();
    let big = vec![b'x'; 128 * 1024 + 1];
    let long_id = "A".repeat(10_000);
    let cases: Vec<ManagementCase> = vec![
        (
            "GET an unknown id",
            "GET",
            "/@connections/AAAAAAAAAAAAAAAAAAAAAA==".into(),
            vec![],
            410,
            "GoneException",
        ),
        (
            "POST to an unknown id",
            "POST",
            "/@connections/nope".into(),
            b"hi".to_vec(),
            410,
            "GoneException",
        ),
        (
            "DELETE an unknown id",
            "DELETE",
            "/@connections/nope".into(),
            vec![],
            410,
            "GoneException",
        ),
        (
            "an unknown id under a stage",
            "POST",
            "/prod/@connections/nope".into(),
            b"hi".to_vec(),
            410,
            "GoneException",
        ),
        (
            "an id of 10,000 characters",
            "GET",
            format!("/@connections/{long_id}"),
            vec![],
            410,
            "GoneException",
        ),
        (
            "an id with an encoded NUL",
            "POST",
            "/@connections/a%00b".into(),
            b"hi".to_vec(),
            410,
            "GoneException",
        ),
        (
            "encoded traversal",
            "GET",
            "/@connections/..%2F..%2Fetc%2Fpasswd".into(),
            vec![],
            410,
            "GoneException",
        ),
        (
            "the id with a suffix",
            "DELETE",
            format!("/@connections/{id}x"),
            vec![],
            410,
            "GoneException",
        ),
        (
            "GET an empty id",
            "GET",
            "/@connections/".into(),
            vec![],
            404,
            "NotFoundException",
        ),
        (
            "POST to an empty id",
            "POST",
            "/@connections/".into(),
            b"hi".to_vec(),
            404,
            "NotFoundException",
        ),
        (
            "DELETE without an id",
            "DELETE",
            "/@connections".into(),
            vec![],
            404,
            "NotFoundException",
        ),
        (
            "literal traversal",
            "GET",
            "/@connections/../../etc/passwd".into(),
            vec![],
            404,
            "",
        ),
        (
            "a body one byte over 128 KiB",
            "POST",
            format!("/@connections/{id}"),
            big.clone(),
            413,
            "PayloadTooLargeException",
        ),
        (
            "a body of 4 MiB",
            "POST",
            format!("/@connections/{id}"),
            vec![b'x'; 4 << 20],
            413,
            "PayloadTooLargeException",
        ),
        (
            "an oversized body under a stage",
            "POST",
            format!("/dev/@connections/{id}"),
            big,
            413,
            "PayloadTooLargeException",
        ),
        (
            "PUT",
            "PUT",
            format!("/@connections/{id}"),
            b"hi".to_vec(),
            405,
            "",
        ),
        (
            "PATCH",
            "PATCH",
            format!("/@connections/{id}"),
            b"hi".to_vec(),
            405,
            "",
        ),
    ];
    for (name, method, path, body, status, error_type) in &cases {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let answer = raw_http(t.addr(), &request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(status_of(&answer), *status, "{name}: {answer:.300}");
        if !error_type.is_empty() {
            assert!(
                answer.to_ascii_lowercase().contains(&format!(
                    "x-amzn-errortype: {}",
                    error_type.to_ascii_lowercase()
                )),
                "{name}: {answer:.300}"
            );
            assert!(answer.contains(r#"{"message":"#), "{name}: {answer:.300}");
        }
    }
    // A chunked body over the limit is cut off too.
    let chunk = vec![b'y'; 64 * 1024];
    let mut chunked = format!(
        "POST /@connections/{id} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_http(t.addr(), &chunked).await.unwrap();
    assert_eq!(status_of(&answer), 413, "{answer:.300}");

    // ann got none of it, is still connected and still chats; nothing was stored.
    assert_eq!(
        ann.drain(Duration::from_millis(200)).await.unwrap(),
        Vec::<Value>::new()
    );
    let (status, _) = http(t.addr(), "GET", &format!("/@connections/{id}"), b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    ann.send(json!({"action":"history","room":"lobby"})).await;
    assert_eq!(
        ann.recv_type("history").await.unwrap()["messages"],
        json!([])
    );
    ann.say("lobby", "still here").await;
}

#[tokio::test]
async fn raw_bytes_on_the_port_get_an_http_error_and_the_server_keeps_serving() {
    let t = server(true).await;
    let mut ann = t.join("lobby", "ann").await;
    let tls_client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(512 * 1024)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        (0..200)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    // (case, bytes, the answer's status)
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("random binary", vec![0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a], 400),
        ("a TLS ClientHello", tls_client_hello.to_vec(), 400),
        ("a request line without a version", b"GET /\r\n\r\n".to_vec(), 400),
        ("a header without a colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(), 400),
        ("a header of 512 KiB", huge_header.into_bytes(), 431),
        ("200 headers", many_headers.into_bytes(), 431),
        ("NUL in the path", b"GET /\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("a negative Content-Length", b"POST /@connections/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("two Content-Lengths", b"POST /@connections/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), 400),
    ];
    for (name, bytes, status) in &cases {
        let answer = raw_http(t.addr(), bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(status_of(&answer), *status, "{name}: {answer:.200}");
    }
    // Half a request, then the client goes away: nothing to answer, nothing breaks.
    {
        use tokio::io::AsyncWriteExt;
        let mut half = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
        half.write_all(b"GET /?room=lobby&user=eve HTTP/1.1\r\nHost: x\r\nUpg")
            .await
            .unwrap();
    }
    let (status, body) = http(t.addr(), "GET", "/healthz", b"").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(t.connections().await.len(), 1);
    ann.say("lobby", "still here").await;
}
