//! The echo example (`examples/echo`), built from the gateway's transport
//! pieces, against a real WebSocket client.

mod support;

#[allow(dead_code, reason = "the example's binary uses what this test does not")]
#[path = "../examples/echo/server.rs"]
mod server;

use server::{EchoConfig, EchoServer};
use support::*;

#[test]
fn the_echo_example_sends_every_message_back_with_the_gateways_limits() {
    let config = EchoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_message_bytes: 4096,
        pong_wait: config().pong_wait,
        ping_period: config().ping_period,
        ..EchoConfig::default()
    };
    let gw = EchoServer::start(config).expect("echo server starts");
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://{}/", gw.local_addr()), tcp(gw.local_addr(), None, None))
            .expect("upgrade");
    for text in ["hello", &"x".repeat(4096)] {
        ws.send(tungstenite::Message::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text(text));
    }
    let bytes = vec![0u8, 1, 2, 255];
    ws.send(tungstenite::Message::binary(bytes.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::binary(bytes));
    ws.send(tungstenite::Message::text("y".repeat(4097))).unwrap();
    assert_eq!(close_code(&recv_close(&mut ws)), 1009);
    assert_eq!(gw.metrics().messages(goclaw::Direction::Out, goclaw::MsgType::Res), 2);

    // Shutdown reaches echo clients too: close 1001, nobody left to cut.
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://{}/", gw.local_addr()), tcp(gw.local_addr(), None, None))
            .expect("upgrade");
    ws.send(tungstenite::Message::text("ready")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("ready"));
    let stopping = std::thread::spawn(move || gw.shutdown());
    assert_eq!(close_code(&recv_close(&mut ws)), 1001);
    assert_eq!(stopping.join().unwrap().cut, 0);
}
