//! How long an audio file is, from its headers: the samples per channel FFmpeg's decoder gives
//! (what `torchaudio.load` returns to LLaMA-Factory; torchaudio ≥ 2.9 decodes through
//! torchcodec, i.e. FFmpeg) and the sample rate. WAV (PCM, float, WAVE_FORMAT_EXTENSIBLE), FLAC
//! (STREAMINFO), MP3 (MPEG-1 / 2 / 2.5 layers I–III: the Xing / Info frame count or a walk over
//! the frames, less LAME's encoder delay and padding as FFmpeg trims them) and Ogg Opus
//! (the granule positions of the first audio page and the last page). Nothing is decoded.
//!
//! Checked against FFmpeg (PyAV) on the files `scripts/make_audio_fixtures.py` writes.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::bytes::{be32, le16, le32, read_up_to};

/// What an audio file's headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioHeader {
    /// Decoded samples per channel.
    pub samples: u64,
    /// Samples per second of the decoded stream.
    pub rate: u64,
    pub channels: u64,
}

impl AudioHeader {
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / self.rate.max(1) as f64
    }
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// An audio file's length and rate from its headers.
pub fn probe_audio(path: &Path) -> Result<AudioHeader, String> {
    probe_audio_of(&mut BufReader::new(File::open(path).map_err(io)?))
}

/// [`probe_audio`] of any seekable reader (what the fuzz target drives).
pub fn probe_audio_of<R: Read + Seek>(f: &mut R) -> Result<AudioHeader, String> {
    let mut head = [0u8; 12];
    let n = read_up_to(f, &mut head)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    if n >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        return wav(f);
    }
    if n >= 4 && &head[..4] == b"OggS" {
        return ogg(f);
    }
    // FLAC and MP3 may both start with an ID3v2 tag.
    let start = if n >= 10 && &head[..3] == b"ID3" {
        let size = head[6..10]
            .iter()
            .fold(0u64, |s, &b| (s << 7) | (b & 0x7f) as u64);
        let footer = if head[5] & 0x10 != 0 { 10 } else { 0 };
        10 + size + footer
    } else {
        0
    };
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut magic = [0u8; 4];
    let m = read_up_to(f, &mut magic)?;
    if m == 4 && &magic == b"fLaC" {
        return flac(f);
    }
    if m >= 2 && magic[0] == 0xff && magic[1] & 0xe0 == 0xe0 {
        return mp3(f, start);
    }
    Err("not a WAV, FLAC, MP3 or Ogg Opus file (other audio formats are not read)".into())
}

/// RIFF chunks until `fmt ` and `data`: samples = data bytes / block align (a `data` size past
/// the end of the file, as streaming writers leave it, is cut to the file).
fn wav<R: Read + Seek>(f: &mut R) -> Result<AudioHeader, String> {
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    let mut pos = 12u64;
    let (mut rate, mut channels, mut align) = (0, 0, 0);
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut h = [0u8; 24];
        let n = read_up_to(f, &mut h)?;
        let size = le32(&h[4..]);
        match &h[..4] {
            b"fmt " => {
                if n < 24 || size < 16 {
                    return Err("WAV `fmt ` chunk is too short".into());
                }
                channels = le16(&h[10..]);
                rate = le32(&h[12..]);
                align = le16(&h[20..]);
            }
            b"data" => {
                if align == 0 || rate == 0 {
                    return Err("WAV `data` before a usable `fmt ` chunk".into());
                }
                let bytes = size.min(len - pos - 8);
                return Ok(AudioHeader {
                    samples: bytes / align,
                    rate,
                    channels,
                });
            }
            _ => {}
        }
        pos += 8 + size + (size & 1);
    }
    Err("WAV file without a `data` chunk".into())
}

/// FLAC's STREAMINFO block (the first metadata block): rate, channels, total samples.
fn flac<R: Read>(f: &mut R) -> Result<AudioHeader, String> {
    let mut b = [0u8; 4 + 34];
    if read_up_to(f, &mut b)? < b.len() || b[0] & 0x7f != 0 {
        return Err("FLAC file without a STREAMINFO block".into());
    }
    let s = &b[4..];
    let rate = ((s[10] as u64) << 12) | ((s[11] as u64) << 4) | ((s[12] as u64) >> 4);
    let channels = ((s[12] as u64 >> 1) & 7) + 1;
    let samples = ((s[13] as u64 & 0x0f) << 32) | be32(&s[14..]);
    if samples == 0 {
        return Err("FLAC STREAMINFO does not give the number of samples".into());
    }
    if rate == 0 {
        return Err("FLAC STREAMINFO has sample rate 0".into());
    }
    Ok(AudioHeader {
        samples,
        rate,
        channels,
    })
}

/// One MPEG audio frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MpegFrame {
    /// Bytes of the frame, header included.
    bytes: u64,
    samples: u64,
    rate: u64,
    channels: u64,
    /// MPEG-1 (else 2 or 2.5).
    mpeg1: bool,
    layer: u8,
}

fn mpeg_frame(h: &[u8]) -> Option<MpegFrame> {
    if h.len() < 4 || h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
    let layer = match (h[1] >> 1) & 3 {
        3 => 1,
        2 => 2,
        1 => 3,
        _ => return None,
    };
    let (bi, ri, pad) = (h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1);
    if version == 1 || bi == 0 || bi == 15 || ri == 3 {
        return None;
    }
    let mpeg1 = version == 3;
    let kbps: [u64; 15] = match (mpeg1, layer) {
        (true, 1) => [
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ],
        (true, 2) => [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ],
        (true, _) => [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ],
        (false, 1) => [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ],
        (false, _) => [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    };
    let rate = match version {
        3 => [44100, 48000, 32000][ri as usize],
        2 => [22050, 24000, 16000][ri as usize],
        _ => [11025, 12000, 8000][ri as usize],
    };
    let bps = kbps[bi as usize] * 1000;
    let pad = pad as u64;
    let (samples, bytes) = match layer {
        1 => (384, (12 * bps / rate + pad) * 4),
        2 => (1152, 144 * bps / rate + pad),
        _ if mpeg1 => (1152, 144 * bps / rate + pad),
        _ => (576, 72 * bps / rate + pad),
    };
    let channels = if h[3] >> 6 == 3 { 1 } else { 2 };
    Some(MpegFrame {
        bytes,
        samples,
        rate,
        channels,
        mpeg1,
        layer,
    })
}

/// MP3: the first frame's Xing / Info (or VBRI) header, which is not audio, gives the frame
/// count and LAME's encoder delay and padding; without a count, the frames are walked. FFmpeg
/// drops delay + padding samples (its 529-sample decoder delay cancels out).
fn mp3<R: Read + Seek>(f: &mut R, start: u64) -> Result<AudioHeader, String> {
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut first = vec![0u8; 2048];
    let n = read_up_to(f, &mut first)?;
    let first = &first[..n];
    let fr = mpeg_frame(first).ok_or("MP3 file without a valid first frame header")?;
    let side = match (fr.mpeg1, fr.channels) {
        (true, 1) => 17,
        (true, _) => 32,
        (false, 1) => 9,
        (false, _) => 17,
    };
    let mut frames = None;
    let mut trim = 0;
    let mut audio_start = start;
    let at = 4 + side;
    if fr.layer == 3 && first.len() >= at + 8 && matches!(&first[at..at + 4], b"Xing" | b"Info") {
        audio_start = start + fr.bytes;
        let flags = be32(&first[at + 4..]);
        let mut p = at + 8;
        if flags & 1 != 0 && first.len() >= p + 4 {
            frames = Some(be32(&first[p..]));
            p += 4;
        }
        if flags & 2 != 0 {
            p += 4;
        }
        if flags & 4 != 0 {
            p += 100;
        }
        if flags & 8 != 0 {
            p += 4;
        }
        // LAME's extension: a 9-byte encoder name, then at +21 the 12-bit delay and padding.
        if first.len() >= p + 24 && matches!(&first[p..p + 4], b"LAME" | b"Lavf" | b"Lavc") {
            let v =
                (first[p + 21] as u64) << 16 | (first[p + 22] as u64) << 8 | first[p + 23] as u64;
            trim = (v >> 12) + (v & 0xfff);
        }
    } else if first.len() >= 36 + 18 && &first[36..40] == b"VBRI" {
        audio_start = start + fr.bytes;
        frames = Some(be32(&first[36 + 14..]));
    }
    let frames = match frames {
        Some(n) if n > 0 => n,
        _ => walk_mpeg(f, audio_start, len)?,
    };
    Ok(AudioHeader {
        samples: (frames * fr.samples).saturating_sub(trim),
        rate: fr.rate,
        channels: fr.channels,
    })
}

/// Frames from `pos` to the end (an ID3v1 / APE tag or garbage after the last frame ends the walk).
fn walk_mpeg<R: Read + Seek>(f: &mut R, mut pos: u64, len: u64) -> Result<u64, String> {
    let mut frames = 0;
    let mut h = [0u8; 4];
    while pos + 4 <= len {
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        if read_up_to(f, &mut h)? < 4 {
            break;
        }
        match mpeg_frame(&h) {
            // A frame cut off by the end of the file is not decoded.
            Some(fr) if fr.bytes >= 4 && pos + fr.bytes <= len => {
                frames += 1;
                pos += fr.bytes;
            }
            _ => break,
        }
    }
    if frames == 0 {
        return Err("MP3 file without audio frames".into());
    }
    Ok(frames)
}

/// Samples (at 48 kHz) of one Opus packet, from its TOC byte and frame count (RFC 6716 §3.1).
fn opus_packet_samples(p: &[u8]) -> u64 {
    let Some(&toc) = p.first() else {
        return 0;
    };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => p.get(1).map_or(0, |b| (b & 0x3f) as u64),
    };
    frame * frames
}

/// Ogg Opus (decoded at 48 kHz): samples = the last page's granule position − the stream's
/// starting granule − the header's pre-skip, as FFmpeg times it. The starting granule is the
/// first audio page's granule less the samples of the packets that end on it (0 for files
/// opusenc writes; FFmpeg's own muxer starts at the pre-skip).
fn ogg<R: Read + Seek>(f: &mut R) -> Result<AudioHeader, String> {
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    let mut pos = 0u64;
    let (mut serial, mut channels, mut skip) = (None, 0, 0);
    // Packets completed so far, and the first two bytes of the one being read.
    let (mut packets, mut head, mut head_len) = (0u64, [0u8; 19], 0usize);
    let mut start = None;
    while start.is_none() && pos + 27 <= len {
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut h = [0u8; 27 + 255];
        let n = read_up_to(f, &mut h)?;
        if n < 27 || &h[..4] != b"OggS" || n < 27 + h[26] as usize {
            return Err("Ogg page header is broken".into());
        }
        let granule = u64::from_le_bytes(h[6..14].try_into().unwrap_or([0; 8]));
        let page_serial = le32(&h[14..]);
        let lacing = &h[27..27 + h[26] as usize];
        let body: u64 = lacing.iter().map(|&l| l as u64).sum();
        if *serial.get_or_insert(page_serial) != page_serial {
            pos += 27 + lacing.len() as u64 + body;
            continue;
        }
        let mut data = vec![0u8; body as usize];
        f.seek(SeekFrom::Start(pos + 27 + lacing.len() as u64))
            .map_err(io)?;
        if read_up_to(f, &mut data)? < data.len() {
            return Err("Ogg page cut short".into());
        }
        let (mut at, mut ended_here) = (0usize, 0u64);
        for &l in lacing {
            let take = (head.len() - head_len).min(l as usize);
            head[head_len..head_len + take].copy_from_slice(&data[at..at + take]);
            head_len += take;
            at += l as usize;
            if l < 255 {
                match packets {
                    0 => {
                        if &head[..8] != b"OpusHead" || head_len < 19 {
                            return Err(
                                "Ogg stream is not Opus (Vorbis and other codecs are not read)"
                                    .into(),
                            );
                        }
                        channels = head[9] as u64;
                        skip = le16(&head[10..]);
                    }
                    1 => {}
                    _ => ended_here += opus_packet_samples(&head[..head_len]),
                }
                packets += 1;
                head_len = 0;
            }
        }
        if ended_here > 0 && granule != u64::MAX {
            start = Some(granule.saturating_sub(ended_here));
        }
        pos += 27 + lacing.len() as u64 + body;
    }
    let start = start.ok_or("Ogg Opus file without audio pages")?;
    // The last page of this stream: scan the file's tail for `OggS`.
    let tail = len.min(1 << 16);
    f.seek(SeekFrom::Start(len - tail)).map_err(io)?;
    let mut buf = vec![0u8; tail as usize];
    let n = read_up_to(f, &mut buf)?;
    let buf = &buf[..n];
    let serial = serial.unwrap_or(0);
    let last = (0..buf.len().saturating_sub(27))
        .rev()
        .filter(|&i| &buf[i..i + 4] == b"OggS" && le32(&buf[i + 14..]) == serial)
        .map(|i| u64::from_le_bytes(buf[i + 6..i + 14].try_into().unwrap_or([0; 8])))
        .find(|&g| g != u64::MAX)
        .ok_or("Ogg file without a final page")?;
    Ok(AudioHeader {
        samples: last.saturating_sub(start).saturating_sub(skip),
        rate: 48000,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn truncated_and_foreign_bytes_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"RIFF\0\0\0\0WAVE",
            b"RIFF\0\0\0\0WAVEdata\x10\0\0\0",
            b"fLaC\0\0\0\x22",
            b"\xff\xfb",
            b"\xff\xfb\x90\x00",
            b"OggS\0\x02",
            b"ID3\x04\0\0\0\0\0\x05xxxxx",
            b"ftypisom",
        ] {
            assert!(
                probe_audio_of(&mut Cursor::new(bytes.to_vec())).is_err(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn mpeg_frame_sizes() {
        // MPEG-1 layer III, 128 kbps, 44.1 kHz, no padding: 417 bytes, 1152 samples.
        let f = mpeg_frame(&[0xff, 0xfb, 0x90, 0x00]).expect("frame");
        assert_eq!(
            (f.bytes, f.samples, f.rate, f.channels),
            (417, 1152, 44100, 2)
        );
        // MPEG-2 layer III, 64 kbps, 22.05 kHz, mono: 72·64000/22050 = 208 bytes, 576 samples.
        let f = mpeg_frame(&[0xff, 0xf3, 0x80, 0xc0]).expect("frame");
        assert_eq!(
            (f.bytes, f.samples, f.rate, f.channels),
            (208, 576, 22050, 1)
        );
    }
}
