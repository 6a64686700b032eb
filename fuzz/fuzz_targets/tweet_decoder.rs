//! libFuzzer's driver for `hashbuy_fuzz::targets::tweet_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hashbuy_fuzz::targets::tweet_decoder(data);
});
