//! What travels on the socket, for both sides: protocol frames and their
//! params, the HTTP upgrade, WebSocket frame encoding, the accept key, the
//! shared token, and the socket calls with absolute read deadlines. No
//! gateway state lives here and nothing here logs; the gateway and the
//! client commands both build on it.

pub mod accept_key;
pub mod auth;
pub mod connect;
pub mod device;
pub mod frame;
pub mod http;
pub mod json;
pub mod net;
pub mod params;
pub mod refusal;
pub mod text;
pub mod ws;
