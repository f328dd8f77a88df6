//! Framing of a port's byte stream: where one telegram ends and the next begins.
//!
//! Pure functions over a byte buffer, so the connection code only reads, calls
//! [`Framing::decode`], and drains `consumed` bytes; every edge case is tested here without
//! sockets.

pub use crate::wire::Framing;
use std::ops::Range;

/// One complete frame found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the body lies in the buffer passed to [`Framing::decode`] (header, newline and
    /// skipped blank lines excluded).
    pub body: Range<usize>,
    /// How many bytes to drain from the front of the buffer: the frame plus anything skipped
    /// before it.
    pub consumed: usize,
}

/// The byte stream itself is broken: there is no way to find the next frame, so the caller
/// sends an error ack and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `header` holds the header bytes received so far, decoded lossily, so the log shows what
    /// the peer actually sent (often another framing, or text).
    #[error("length header {header:?} is not {digits} ASCII digits")]
    BadHeader { header: String, digits: u8 },
    #[error("frame of {len} bytes exceeds max_frame_bytes {max}")]
    TooLarge { len: usize, max: usize },
    #[error("ack of {len} bytes does not fit a {digits}-digit length header")]
    HeaderOverflow { len: usize, digits: u8 },
    #[error("ack of {len} bytes does not fit a 4-byte length header")]
    U32Overflow { len: usize },
}

impl Framing {
    /// Decode the first complete frame in `buf`. `Ok(None)` = need more bytes. `Err` = the
    /// framing itself is broken (caller sends an error ack and closes the connection).
    ///
    /// Oversized frames are rejected as soon as the header (or, for ndjson, the unterminated
    /// line) shows it, so a frame never makes the buffer grow past `max_frame_bytes` plus a
    /// header. Ndjson blank lines (keep-alives) are consumed as an empty frame when no real
    /// line follows them yet, so a peer sending only keep-alives never grows the buffer.
    pub fn decode(&self, buf: &[u8], max_frame_bytes: usize) -> Result<Option<Frame>, FrameError> {
        match *self {
            Framing::Ndjson => decode_line(buf, max_frame_bytes),
            Framing::AsciiLen { digits } => {
                let want = usize::from(digits);
                let header = &buf[..buf.len().min(want)];
                // Zero digits could only ever yield empty frames that consume nothing.
                if want == 0 || !header.iter().all(u8::is_ascii_digit) {
                    return Err(FrameError::BadHeader {
                        header: String::from_utf8_lossy(header).into_owned(),
                        digits,
                    });
                }
                if header.len() < want {
                    return Ok(None);
                }
                // Saturating: a 30-digit header is simply "too large", not an overflow.
                let len = header.iter().fold(0usize, |acc, d| {
                    acc.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                });
                length_prefixed(buf, want, len, max_frame_bytes)
            }
            Framing::U32Be => match buf.split_first_chunk::<4>() {
                None => Ok(None),
                Some((header, _)) => {
                    let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
                    length_prefixed(buf, 4, len, max_frame_bytes)
                }
            },
        }
    }

    /// Append one frame holding `body` to `out`. On error `out` is left unchanged.
    pub fn encode(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        match *self {
            Framing::Ndjson => {
                debug_assert!(
                    !body.contains(&b'\n'),
                    "an ndjson body cannot hold a newline"
                );
                out.extend_from_slice(body);
                out.push(b'\n');
            }
            Framing::AsciiLen { digits } => {
                let header = format!("{:0width$}", body.len(), width = usize::from(digits));
                if header.len() > usize::from(digits) {
                    return Err(FrameError::HeaderOverflow {
                        len: body.len(),
                        digits,
                    });
                }
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(body);
            }
            Framing::U32Be => {
                let len = u32::try_from(body.len())
                    .map_err(|_| FrameError::U32Overflow { len: body.len() })?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(body);
            }
        }
        Ok(())
    }
}

/// A frame whose `header_len`-byte header announced `len` body bytes.
fn length_prefixed(
    buf: &[u8],
    header_len: usize,
    len: usize,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let end = header_len.saturating_add(len);
    Ok((buf.len() >= end).then_some(Frame {
        body: header_len..end,
        consumed: end,
    }))
}

/// The first non-blank line. Blank lines (keep-alives, stray CRLFs) are skipped and counted in
/// the returned frame's `consumed`; if no real line follows them yet, they come back as one
/// empty frame (the caller ignores empty ndjson bodies) so that they leave the buffer.
fn decode_line(buf: &[u8], max: usize) -> Result<Option<Frame>, FrameError> {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            // A trailing '\r' may still turn out to be part of the line ending.
            let len = rest.strip_suffix(b"\r").unwrap_or(rest).len();
            return if len > max {
                Err(FrameError::TooLarge { len, max })
            } else if start > 0 {
                Ok(Some(Frame {
                    body: start..start,
                    consumed: start,
                }))
            } else {
                Ok(None)
            };
        };
        let line = &rest[..newline];
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        if body.is_empty() {
            start += newline + 1;
            continue;
        }
        if body.len() > max {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max,
            });
        }
        return Ok(Some(Frame {
            body: start..start + body.len(),
            consumed: start + newline + 1,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;
    /// Decode every frame in `buf`, draining as a connection would; returns the bodies and the
    /// undecoded remainder.
    fn decode_all(framing: Framing, mut buf: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut bodies = Vec::new();
        while let Some(frame) = framing.decode(buf, MAX).expect("decode") {
            bodies.push(buf[frame.body].to_vec());
            buf = &buf[frame.consumed..];
        }
        (bodies, buf.to_vec())
    }

    #[test]
    fn every_strict_prefix_is_incomplete_and_the_whole_is_one_frame() {
        let cases: &[(Framing, &[u8], Range<usize>)] = &[
            (Framing::Ndjson, b"{\"a\":1}\n", 0..7),
            (Framing::Ndjson, b"{\"a\":1}\r\n", 0..7),
            (Framing::AsciiLen { digits: 4 }, b"0007{\"a\":1}", 4..11),
            (Framing::AsciiLen { digits: 2 }, b"07{\"a\":1}", 2..9),
            (Framing::U32Be, b"\0\0\0\x07{\"a\":1}", 4..11),
        ];
        for (framing, wire, body) in cases {
            for cut in 0..wire.len() {
                assert_eq!(
                    framing.decode(&wire[..cut], MAX),
                    Ok(None),
                    "{framing:?} cut {cut}"
                );
            }
            let frame = Frame {
                body: body.clone(),
                consumed: wire.len(),
            };
            assert_eq!(framing.decode(wire, MAX), Ok(Some(frame)), "{framing:?}");
        }
    }

    #[test]
    fn several_frames_in_one_buffer_decode_in_order() {
        let cases: &[(Framing, &[u8], &[u8])] = &[
            (
                Framing::Ndjson,
                b"{\"a\":1}\n{}\r\n\n\r\n[2]\npart",
                b"part",
            ),
            (
                Framing::AsciiLen { digits: 3 },
                b"007{\"a\":1}002{}003[2]00",
                b"00",
            ),
            (
                Framing::U32Be,
                b"\0\0\0\x07{\"a\":1}\0\0\0\x02{}\0\0\0\x03[2]\0\0",
                b"\0\0",
            ),
        ];
        for (framing, wire, tail) in cases {
            let (bodies, rest) = decode_all(*framing, wire);
            assert_eq!(bodies, [&b"{\"a\":1}"[..], b"{}", b"[2]"], "{framing:?}");
            assert_eq!(rest, *tail, "{framing:?}");
        }
    }

    #[test]
    fn ndjson_blank_lines_are_consumed_with_the_next_frame_or_as_an_empty_one() {
        let cases: &[(&[u8], Option<Frame>)] = &[
            (
                b"\n",
                Some(Frame {
                    body: 1..1,
                    consumed: 1,
                }),
            ),
            (
                b"\r\n\n\r\n",
                Some(Frame {
                    body: 5..5,
                    consumed: 5,
                }),
            ),
            (
                b"\n\r\n{}",
                Some(Frame {
                    body: 3..3,
                    consumed: 3,
                }),
            ),
            (b"{}", None),
            (
                b"\n\r\n{}\n",
                Some(Frame {
                    body: 3..5,
                    consumed: 6,
                }),
            ),
            (
                b"\r\n\r\n{}\r\nx",
                Some(Frame {
                    body: 4..6,
                    consumed: 8,
                }),
            ),
            // A lone '\r' inside a line is data, not a line ending.
            (
                b"a\rb\n",
                Some(Frame {
                    body: 0..3,
                    consumed: 4,
                }),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(
                Framing::Ndjson.decode(wire, MAX),
                Ok(want.clone()),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_rejected_without_waiting_for_the_body() {
        let max = 4;
        type Decoded = Result<Option<Frame>, FrameError>;
        let cases: &[(Framing, &[u8], Decoded)] = &[
            // Exactly max is fine, with or without CR.
            (
                Framing::Ndjson,
                b"abcd\n",
                Ok(Some(Frame {
                    body: 0..4,
                    consumed: 5,
                })),
            ),
            (
                Framing::Ndjson,
                b"abcd\r\n",
                Ok(Some(Frame {
                    body: 0..4,
                    consumed: 6,
                })),
            ),
            (Framing::Ndjson, b"abcd\r", Ok(None)),
            (
                Framing::Ndjson,
                b"abcde\n",
                Err(FrameError::TooLarge { len: 5, max }),
            ),
            (
                Framing::Ndjson,
                b"abcde",
                Err(FrameError::TooLarge { len: 5, max }),
            ),
            (
                Framing::Ndjson,
                b"\n\nabcde",
                Err(FrameError::TooLarge { len: 5, max }),
            ),
            (
                Framing::Ndjson,
                b"ab\nabcdef",
                Ok(Some(Frame {
                    body: 0..2,
                    consumed: 3,
                })),
            ),
            (Framing::AsciiLen { digits: 4 }, b"0004", Ok(None)),
            (
                Framing::AsciiLen { digits: 4 },
                b"0005",
                Err(FrameError::TooLarge { len: 5, max }),
            ),
            (
                Framing::AsciiLen { digits: 30 },
                b"999999999999999999999999999999",
                Err(FrameError::TooLarge {
                    len: usize::MAX,
                    max,
                }),
            ),
            (Framing::U32Be, b"\0\0\0\x04", Ok(None)),
            (
                Framing::U32Be,
                b"\0\0\0\x05",
                Err(FrameError::TooLarge { len: 5, max }),
            ),
            (
                Framing::U32Be,
                b"\xff\xff\xff\xff",
                Err(FrameError::TooLarge {
                    len: 0xffff_ffff,
                    max,
                }),
            ),
        ];
        for (framing, wire, want) in cases {
            assert_eq!(&framing.decode(wire, max), want, "{framing:?} {wire:?}");
        }
    }

    #[test]
    fn a_non_digit_header_is_rejected_as_soon_as_it_arrives() {
        let bad = |header: &str| FrameError::BadHeader {
            header: header.into(),
            digits: 4,
        };
        let cases: &[(&[u8], FrameError)] = &[
            (b"a", bad("a")),
            (b"00x", bad("00x")),
            (b" 012{}", bad(" 012")),
            (b"-001{}", bad("-001")),
            (b"+001{}", bad("+001")),
            (b"{\"a\"", bad("{\"a\"")),
            (b"\0\0\0\x02{}", bad("\0\0\0\u{2}")),
            (b"\xea\xb0", bad("\u{fffd}")),
        ];
        let framing = Framing::AsciiLen { digits: 4 };
        for (wire, want) in cases {
            assert_eq!(framing.decode(wire, MAX), Err(want.clone()), "{wire:?}");
        }
        let zero = Framing::AsciiLen { digits: 0 };
        let want = FrameError::BadHeader {
            header: String::new(),
            digits: 0,
        };
        assert_eq!(zero.decode(b"{}", MAX), Err(want));
    }

    #[test]
    fn bad_header_message_shows_what_the_peer_sent() {
        let err = Framing::AsciiLen { digits: 4 }
            .decode(b"-1{}", MAX)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "length header \"-1{}\" is not 4 ASCII digits"
        );
    }

    #[test]
    fn zero_length_frames_are_empty_bodies() {
        let cases: &[(Framing, &[u8])] = &[
            (Framing::AsciiLen { digits: 4 }, b"0000rest"),
            (Framing::U32Be, b"\0\0\0\0rest"),
        ];
        for (framing, wire) in cases {
            let want = Frame {
                body: 4..4,
                consumed: 4,
            };
            assert_eq!(framing.decode(wire, MAX), Ok(Some(want)), "{framing:?}");
        }
    }

    #[test]
    fn encode_writes_the_exact_wire_bytes() {
        let cases: &[(Framing, &[u8], &[u8])] = &[
            (Framing::Ndjson, b"{\"ok\":true}", b"{\"ok\":true}\n"),
            (
                Framing::AsciiLen { digits: 4 },
                b"{\"ok\":true}",
                b"0011{\"ok\":true}",
            ),
            (
                Framing::AsciiLen { digits: 2 },
                b"{\"ok\":true}",
                b"11{\"ok\":true}",
            ),
            (Framing::AsciiLen { digits: 4 }, b"", b"0000"),
            (Framing::U32Be, b"{\"ok\":true}", b"\0\0\0\x0b{\"ok\":true}"),
            (Framing::U32Be, b"", b"\0\0\0\0"),
        ];
        for (framing, body, wire) in cases {
            let mut out = b"prev".to_vec();
            framing.encode(body, &mut out).expect("encode");
            assert_eq!(&out[..4], b"prev", "{framing:?} keeps what was there");
            assert_eq!(&out[4..], *wire, "{framing:?}");
        }
    }

    #[test]
    fn encode_rejects_a_body_too_long_for_the_digits() {
        let cases: &[(u8, usize)] = &[(1, 10), (2, 100), (4, 10_000), (0, 0)];
        for &(digits, len) in cases {
            let mut out = b"prev".to_vec();
            let got = Framing::AsciiLen { digits }.encode(&vec![b'x'; len], &mut out);
            assert_eq!(
                got,
                Err(FrameError::HeaderOverflow { len, digits }),
                "{digits}"
            );
            assert_eq!(out, b"prev");
        }
    }

    #[test]
    fn encode_then_decode_round_trips_for_every_framing() {
        let ack = b"{\"ok\":true,\"key\":\"K1\",\"id\":\"42\"}";
        let korean = "{\"error\":\"이체 실패\"}".as_bytes();
        let longest = [b'y'; MAX];
        let cases: &[(Framing, &[&[u8]])] = &[
            (Framing::Ndjson, &[ack, korean, b"x", &longest]),
            (
                Framing::AsciiLen { digits: 4 },
                &[ack, korean, b"", &longest],
            ),
            (Framing::AsciiLen { digits: 1 }, &[b"123456789", b"", b"x"]),
            (Framing::U32Be, &[ack, korean, b"", &longest]),
        ];
        for (framing, bodies) in cases {
            let mut wire = Vec::new();
            for body in *bodies {
                framing.encode(body, &mut wire).expect("encode");
            }
            let (got, rest) = decode_all(*framing, &wire);
            assert_eq!(got, *bodies, "{framing:?}");
            assert_eq!(rest, b"", "{framing:?}");
        }
    }
}
