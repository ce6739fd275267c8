//! The box's firmware: Secure Boot (efivars), the TPM's version (sysfs),
//! and a BIOS administrator password (`/sys/class/firmware-attributes`).
//!
//! The seed (section 3.2-3.4): a BIOS password first ("if we don't protect
//! it, anything we do in the later steps is meaningless"), disk encryption
//! unlocked by the TPM, and Secure Boot so that the boot loader, which the
//! disk encryption does not cover, cannot be replaced.

use super::{quote, Check, CheckId};

/// The EFI global variable GUID: `SecureBoot-<this>` and `SetupMode-<this>`
/// under `/sys/firmware/efi/efivars/`.
pub const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The efivars files [`check_secure_boot`] reads.
pub fn efivar_path(name: &str) -> String {
    format!("/sys/firmware/efi/efivars/{name}-{EFI_GLOBAL_GUID}")
}

/// `EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS`: the
/// attributes the UEFI specification gives `SecureBoot` and `SetupMode`
/// (read-only, volatile, set by the firmware).
const BS_RT: u32 = 0x2 | 0x4;

/// A one-byte boolean EFI variable as efivarfs shows it: 4 attribute bytes
/// (little-endian), then the data byte, which must be 0 or 1. Also read by
/// the installer's Secure Boot check (`image::install`).
pub(crate) fn efi_bool(name: &str, bytes: &[u8]) -> Result<bool, String> {
    let [a0, a1, a2, a3, data] = bytes else {
        return Err(format!("{name} is {} bytes, not 5 (4 attribute bytes and 1 data byte)", bytes.len()));
    };
    let attrs = u32::from_le_bytes([*a0, *a1, *a2, *a3]);
    if attrs != BS_RT {
        return Err(format!("{name} has attributes {attrs:#x}, not {BS_RT:#x} as the firmware sets them"));
    }
    match data {
        0 => Ok(false),
        1 => Ok(true),
        d => Err(format!("{name} holds {d}, neither 0 nor 1")),
    }
}

/// Secure Boot from the contents of the `SecureBoot` and `SetupMode`
/// efivars files (`None`: the file does not exist). Ok only when enabled
/// and in user mode (setup mode: anyone can enroll their own keys).
pub fn check_secure_boot(secure_boot: Option<&[u8]>, setup_mode: Option<&[u8]>) -> Check {
    const ID: CheckId = CheckId::SecureBoot;
    const FIX: &str = "in the firmware setup, enroll your own Secure Boot keys and enable Secure Boot (docs/box.md)";
    let Some(sb) = secure_boot else {
        return Check::unknown(
            ID,
            "no SecureBoot EFI variable: the box did not boot through UEFI, or efivarfs is not mounted",
            "boot the box in UEFI mode (not legacy/CSM) with Secure Boot, and mount efivarfs on /sys/firmware/efi/efivars",
        );
    };
    let setup = setup_mode.map(|b| efi_bool("SetupMode", b));
    match (efi_bool("SecureBoot", sb), setup) {
        (Err(e), _) | (Ok(true), Some(Err(e))) => {
            Check::unknown(ID, e, "look at `bootctl status` or `mokutil --sb-state`")
        }
        (Ok(false), Some(Ok(true))) => {
            Check::fail(ID, "Secure Boot is disabled and the firmware is in setup mode (no platform key)", FIX)
        }
        (Ok(false), _) => Check::fail(ID, "Secure Boot is disabled", FIX),
        (Ok(true), None) => Check::unknown(
            ID,
            "SecureBoot is 1 but the SetupMode variable is missing: this firmware does not follow UEFI",
            "look at `bootctl status`",
        ),
        (Ok(true), Some(Ok(true))) => Check::fail(
            ID,
            "Secure Boot is on but the firmware is in setup mode: anyone can enroll their own keys",
            "enroll a platform key (e.g. `sbctl enroll-keys`) so that the firmware leaves setup mode",
        ),
        (Ok(true), Some(Ok(false))) => Check::ok(ID, "Secure Boot is enabled, in user mode"),
    }
}

/// Where [`check_tpm_version`] reads from.
pub const TPM_VERSION_PATH: &str = "/sys/class/tpm/tpm0/tpm_version_major";

/// The TPM's major version from [`TPM_VERSION_PATH`] (`None`: absent).
pub fn check_tpm_version(major: Option<&str>) -> Check {
    const ID: CheckId = CheckId::TpmVersion;
    match major.map(|s| s.strip_suffix('\n').unwrap_or(s)) {
        None => Check::unknown(
            ID,
            format!("{TPM_VERSION_PATH} is missing: no TPM, a TPM turned off in the firmware, or a kernel without its driver"),
            "turn the TPM on in the firmware setup (Security Chip / PTT / fTPM), and check `ls /sys/class/tpm`",
        ),
        Some("2") => Check::ok(ID, "TPM 2.0"),
        Some("1") => Check::warn(
            ID,
            "TPM 1.2: systemd-cryptenroll cannot use it (unlocking needs custom initramfs hooks), its PCRs are SHA-1 and it has known weaknesses; fine for a box that holds no secrets, as the seed says",
            "use a machine with TPM 2.0 (or firmware TPM) if you can; else see docs/box.md for TPM 1.2",
        ),
        Some(other) => Check::unknown(
            ID,
            format!("{TPM_VERSION_PATH} says {}, not 1 or 2", quote(other)),
            "look at `ls -l /sys/class/tpm/` and the kernel log",
        ),
    }
}

/// One authentication object of `/sys/class/firmware-attributes/DRIVER/
/// authentication/NAME/`: its `role` and `is_enabled` files (`None`:
/// missing or unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthObject {
    pub driver: String,
    pub name: String,
    pub role: Option<String>,
    pub is_enabled: Option<String>,
}

/// Where [`check_bios_password`]'s objects live.
pub const FIRMWARE_ATTRIBUTES: &str = "/sys/class/firmware-attributes";

/// A BIOS administrator password, from the authentication objects found
/// (empty: the class or its authentication objects are not exposed, which
/// is the case on most machines: only some Dell, Lenovo and HP drivers do).
/// The administrator object is the one whose `role` is `bios-admin` (the
/// kernel's ABI document), or named `Admin` when it has no `role`.
pub fn check_bios_password(objects: &[AuthObject]) -> Check {
    const ID: CheckId = CheckId::BiosPassword;
    let trim = |s: &Option<String>| s.as_deref().map(|s| s.strip_suffix('\n').unwrap_or(s).to_owned());
    let admins: Vec<&AuthObject> = objects
        .iter()
        .filter(|o| match trim(&o.role).as_deref() {
            Some(role) => role == "bios-admin",
            None => o.name == "Admin",
        })
        .collect();
    let where_ = |o: &AuthObject| format!("{FIRMWARE_ATTRIBUTES}/{}/authentication/{}", o.driver, o.name);
    if let Some(o) = admins.iter().find(|o| trim(&o.is_enabled).as_deref() == Some("1")) {
        return Check::ok(ID, format!("a BIOS administrator password is set ({})", super::one_line(&where_(o))));
    }
    let unknown_fix = "make sure a BIOS administrator (setup) password is set: enter the firmware setup and look";
    match admins.first() {
        None => Check::unknown(
            ID,
            if objects.is_empty() {
                format!("this firmware does not say whether a BIOS password is set (nothing under {FIRMWARE_ATTRIBUTES})")
            } else {
                format!("{FIRMWARE_ATTRIBUTES} has no BIOS administrator object")
            },
            unknown_fix,
        ),
        Some(o) if admins.iter().all(|o| trim(&o.is_enabled).as_deref() == Some("0")) => Check::fail(
            ID,
            format!("no BIOS administrator password is set ({}/is_enabled is 0)", super::one_line(&where_(o))),
            "set a BIOS administrator (setup) password in the firmware setup, so that nobody can turn Secure Boot or the TPM off",
        ),
        Some(o) => Check::unknown(
            ID,
            format!("{}/is_enabled is not 0 or 1", super::one_line(&where_(o))),
            unknown_fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    // efivars files as the kernel shows them: attributes 0x06 (BS|RT), then
    // one data byte. Hand-written from the UEFI specification (section 3.3,
    // "Globally Defined Variables"); this machine has no UEFI firmware.
    const ON: &[u8] = &[0x06, 0, 0, 0, 1];
    const OFF: &[u8] = &[0x06, 0, 0, 0, 0];

    #[test]
    fn secure_boot_enabled_in_user_mode_is_the_only_ok() {
        let s = |sb, sm| check_secure_boot(sb, sm).status();
        assert_eq!(s(Some(ON), Some(OFF)), Status::Ok);
        assert_eq!(s(Some(OFF), Some(OFF)), Status::Fail, "disabled");
        assert_eq!(s(Some(OFF), Some(ON)), Status::Fail, "disabled, setup mode");
        assert_eq!(s(Some(ON), Some(ON)), Status::Fail, "setup mode");
        assert!(check_secure_boot(Some(ON), Some(ON)).summary().contains("setup mode"));
        assert_eq!(s(None, None), Status::Unknown, "no UEFI");
        assert_eq!(s(None, Some(OFF)), Status::Unknown);
        assert_eq!(s(Some(ON), None), Status::Unknown, "no SetupMode");
        assert_eq!(s(Some(OFF), None), Status::Fail, "disabled whatever the mode");
    }

    #[test]
    fn malformed_efivars_are_unknown() {
        let s = |sb: &[u8]| check_secure_boot(Some(sb), Some(OFF));
        assert_eq!(s(&[1]).status(), Status::Unknown, "no attributes");
        assert_eq!(s(&[0x06, 0, 0, 0, 1, 0]).status(), Status::Unknown, "two data bytes");
        assert_eq!(s(&[0x06, 0, 0, 0, 2]).status(), Status::Unknown);
        assert!(s(&[0x07, 0, 0, 0, 1]).summary().contains("attributes 0x7"), "non-volatile: not the firmware's");
        assert_eq!(check_secure_boot(Some(ON), Some(&[0x06, 0, 0, 0, 9])).status(), Status::Unknown);
        assert!(efivar_path("SecureBoot").ends_with("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"));
    }

    #[test]
    fn tpm_2_is_ok_1_2_warns_anything_else_is_unknown() {
        assert_eq!(check_tpm_version(Some("2\n")).status(), Status::Ok);
        let w = check_tpm_version(Some("1\n"));
        assert_eq!(w.status(), Status::Warn);
        assert!(w.summary().contains("SHA-1"), "the seed's caveats: {w:?}");
        assert_eq!(check_tpm_version(None).status(), Status::Unknown);
        for bad in ["", "2\n\n", " 2", "3", "2.0"] {
            assert_eq!(check_tpm_version(Some(bad)).status(), Status::Unknown, "{bad:?}");
        }
    }

    fn obj(name: &str, role: Option<&str>, on: Option<&str>) -> AuthObject {
        AuthObject {
            driver: "thinklmi".into(),
            name: name.into(),
            role: role.map(str::to_owned),
            is_enabled: on.map(str::to_owned),
        }
    }

    #[test]
    fn a_bios_password_is_ok_only_where_the_firmware_says_so() {
        let s = |o: &[AuthObject]| check_bios_password(o).status();
        assert_eq!(s(&[]), Status::Unknown, "not exposed: never a pass");
        assert_eq!(s(&[obj("Admin", Some("bios-admin\n"), Some("1\n"))]), Status::Ok);
        assert_eq!(s(&[obj("Admin", None, Some("1"))]), Status::Ok, "no role file: the name says it");
        assert_eq!(s(&[obj("Admin", Some("bios-admin\n"), Some("0\n"))]), Status::Fail);
        assert_eq!(
            s(&[obj("System", Some("power-on\n"), Some("1\n"))]),
            Status::Unknown,
            "a boot password is not the admin's"
        );
        assert_eq!(s(&[obj("Admin", Some("bios-admin"), None)]), Status::Unknown);
        assert_eq!(s(&[obj("Admin", Some("bios-admin"), Some("yes"))]), Status::Unknown);
        assert_eq!(s(&[obj("Admin", Some("power-on"), Some("1"))]), Status::Unknown, "the role wins over the name");
    }
}
