//! The image, video and audio header readers (`lorafit estimate` on a multimodal dataset): any
//! bytes are a size / a video or audio header or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorafit_data::media::{image_size_of, probe_audio_of, probe_video_of};

fuzz_target!(|data: &[u8]| {
    let _ = image_size_of(&mut std::io::Cursor::new(data));
    let _ = probe_video_of(&mut std::io::Cursor::new(data));
    let _ = probe_audio_of(&mut std::io::Cursor::new(data));
});
