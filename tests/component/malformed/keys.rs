//! Throw-away signing keys (made with `openssl genpkey`) and deterministic
//! pseudo-random numbers (splitmix64).

use super::*;

pub(super) const EC_KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcd2s3puoN0FqvsR9
vF5iIu+2tcxd79kDHjewgKFk3d2hRANCAAQ6tfrc2ZhPI01dwgFn5TA0t8sEtWT1
qVl5aKlxoZaEQuPipcTRShLtSm638GPQBX50R7XRTefXlllF6kGBZuw6
-----END PRIVATE KEY-----
";

pub(super) const EC_KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgu8aZt02WZSrF1CpN
FrCLPWI8L6LZl18CDtlJO5z4zJKhRANCAASZZh4R36Zh0WAJT0JF9OFXSnGx4AX2
1r08lq2goYr56utnIDVjhFGt+jCZN/WrnZ4VF0VOOCjFZB4rRlJ/yt8Z
-----END PRIVATE KEY-----
";

pub(super) const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCY/pUz184ZUWN+
R2lPV5ANztgxnvsi//ZObSlkgzp6WkDUxldXsIS2Bwk8hsp7qAXU47hP7PSytJAj
/EXPZfRHHLm+69oTgjXYF4RRQHSVezZ35IIbNT+pOOzJA5i9yk1mLx3m6XlklQrp
T5EOLVcPg238KsPFTJozP3Wz9+5wlepPDVDTztUK+TgmINXtuoxVqtrrAZC/tyTK
p0XZkFM+uaT5b2LcrLUakk/fc83fBjInSfsgq988udBWkgmuYaxxu9AUFYrjaKrt
WJpigvqGy1L4vkiLiCAGbmHe/5dXXQ1ScYaKWuOehEUOJ09TtFem04/hyjVPQnpy
wguK2JQDAgMBAAECggEABkVXdW+HM0LcJbhLMoUi32rQZU0Te0srtYOd6oPCdgwu
LUp2TAU5+05tUrDHqqsOMIkNuSDvCqzoXfRtVbBJ6ekQgY9s03ET2egxp5u3uGTI
Rib0k9iD5BP0O9Nmg4KMpGXFmP0npgRbe4kKWtI0h+tAKwTQHDPxyHkozuT+14um
4PCmIPZ7xEWFYkmJZ88Vj+x/5T2RQ2h7VEM8XpD0CH5+16Ohexwe68KTQfYL2g/B
m1oL5FrezBqxSxX+JCPBXUUgWF93iZao3sFn+usxEdEubDZ+1YypUic/IchJww9v
Rv1s3iU9bJvGG4TaJR/Z0lzZJxz5fdMxJ/bSsH6mYQKBgQDMaImMn8KehgFktEpK
ADvh3Z0AV5GMpE0Kq7sDSdS6qbW9K3/8EpP80VrXTU8s+YyiuqdlnenDWaloMx8w
PPgutcAdrPDKZK0zukIJj43vcrSCdLbiBv+LholHInjqEkdgLkaU0EySFwbTScEe
MgJAwcDfNOM2uTFnnhygZURFEQKBgQC/nAicWNBjntzeiXsCge2yBB97mo9mCqpm
EApCC/AH/EqMoDPMPAUy+FC0iniM1adpu0+vrjgxS1DZpSV2LtgRz9+jeBssUHkX
fvXTfEEThXl3nmDO6DqxUUa+HohcBTax4o1Y9eoRiffR7+E4eNvzf5a/n1aXssN/
5fla+O030wKBgGr2UPPrLbYyPUxrI2yxzqQUiXGCYUGNQFtTHdtMqSq8X8OLnb9U
IWhsTPLZG5NXSoZk0e/UwFxe8Mz741gkr2IR7WQZ+S6PnCqzTpceLZGdHmQdmw2P
x+1FC1TT7x3dTsg/ruN0VH0l24Z407tvQ8qLGNg0HqmmIvorvKMaGq1hAoGACCv0
Zg6XnJgK3WbJmzrFU2E/onreAMEVsVKfzV9K9lw5JbQzYVNx+VGDx59cMs1t3WGC
rYBlnxySLyYO6fJnfqL567PUnNg1wd3FSCa1c8quen6DrG9VCXjo5nTQ5fPG+GEs
HA4o1GSo8Agl982Xu9PGLxfxjniuQ8cgElQpcccCgYA8fSNFlXCYf6tDoBLHrctm
/OSw389yitf5krHamRUW0291XRfuDa12VqddyjL4YPgsmuWaMva0IutP924j/Rai
RiB43xzwKZ0rjsyOX/coS20sG0ZkdKvS76BegqtjkUBwiZeVh/eCkwjeJKSXkGo3
mwBttpz5zH5IHUV9y3kBog==
-----END PRIVATE KEY-----
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    EcA,
    EcB,
    Rsa,
}

impl Key {
    pub(super) fn pem(self) -> &'static str {
        match self {
            Key::EcA => EC_KEY_A,
            Key::EcB => EC_KEY_B,
            Key::Rsa => RSA_KEY,
        }
    }

    pub(super) fn signing(self) -> SigningKey {
        SigningKey::from_pem(self.pem().as_bytes()).expect("test key parses")
    }

    pub(super) fn verify(self) -> VerifyKey {
        self.signing().verify_key()
    }

    pub(super) fn sign(self, message: &[u8]) -> Vec<u8> {
        self.signing()
            .sign(message)
            .expect("signing works")
            .into_bytes()
    }
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random numbers (splitmix64).

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(super) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

pub(super) fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &["mender ", "update ", "rootfs ", "device\n", "a=b ", "42 "];
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
    }
    out.truncate(len);
    out
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
