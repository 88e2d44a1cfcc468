//! WebSocket frames the way this crate writes them (RFC 6455 §5): final,
//! unmasked server frames built in place, so a body is never copied to
//! prepend its header, and control frames cut to the 125 bytes the RFC
//! allows. Encoding only: the reading side is tungstenite's.

/// WebSocket opcodes the gateway sends (RFC 6455 §5.2).
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode (the echo example only: the protocol is text).
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;

/// Room kept in front of a [`DataFrame`] for the longest frame header.
const HEADER_ROOM: usize = 10;
/// Longest close reason: control frames carry at most 125 bytes, two of
/// which are the code (RFC 6455 §5.5).
const MAX_CLOSE_REASON: usize = 123;

/// A data frame built in place: the body is written after room for the
/// header, which [`DataFrame::finish`] fills in, so the body is never copied.
#[derive(Debug)]
pub struct DataFrame {
    opcode: u8,
    buf: Vec<u8>,
}

impl DataFrame {
    /// An empty text frame with room for a small body.
    pub fn text() -> DataFrame {
        DataFrame::with_capacity(OP_TEXT, 256)
    }

    /// An empty frame of `opcode` with room for `capacity` body bytes.
    pub fn with_capacity(opcode: u8, capacity: usize) -> DataFrame {
        let mut buf = Vec::with_capacity(HEADER_ROOM + capacity);
        buf.resize(HEADER_ROOM, 0);
        DataFrame { opcode, buf }
    }

    /// The body, to append to.
    pub fn body(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The length of the body written so far.
    pub fn len(&self) -> usize {
        self.buf.len() - HEADER_ROOM
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The finished frame: header and body.
    pub fn finish(&mut self) -> &[u8] {
        let len = self.buf.len() - HEADER_ROOM;
        let (header, header_len) = frame_header(self.opcode, len);
        let start = HEADER_ROOM - header_len;
        self.buf[start..HEADER_ROOM].copy_from_slice(&header[..header_len]);
        &self.buf[start..]
    }
}

/// A final, unmasked frame header (RFC 6455 §5.2): the bytes and how many of
/// them are used.
pub fn frame_header(opcode: u8, len: usize) -> ([u8; HEADER_ROOM], usize) {
    let mut header = [0u8; HEADER_ROOM];
    header[0] = 0x80 | opcode;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// A complete control frame with a small payload (at most 125 bytes).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let (header, header_len) = frame_header(opcode, payload.len());
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(payload);
    frame
}

/// A close frame with a code and a reason cut to fit a control frame (on a
/// character boundary, so it stays valid UTF-8).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let end = reason.floor_char_boundary(MAX_CLOSE_REASON);
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control_frame(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn headers_parse_back() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 1 << 20] {
            let (header, n) = frame_header(OP_TEXT, len);
            let mut cursor = std::io::Cursor::new(&header[..n]);
            let (parsed, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len, len as u64);
            assert!(parsed.is_final);
            assert_eq!(cursor.position() as usize, n);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let frame = close_frame(1000, &"é".repeat(100));
        assert_eq!(frame.len(), 2 + 2 + 122);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
