#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postdesk_fuzz::targets::templates(data));
