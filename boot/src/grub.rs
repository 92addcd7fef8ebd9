//! The grub menu, read by both GRUBs on the stick: the signed EFI grub reads `$prefix/grub.cfg` with
//! `$prefix` = `(the ESP)/EFI/debian` (built into the signed binary), and the BIOS core image is built
//! with the same prefix (see [`crate::bios`]). The kernel paths below are on that same partition and need
//! no `search`.

use crate::gpt::Guid;
use crate::menu;

pub const KERNEL_PATH: &str = "/rescue/vmlinuz";
pub const INITRD_PATH: &str = "/rescue/initrd.img";
/// Where the menu is on the ESP (the signed grub's built-in prefix).
pub const CFG_PATH: &str = "/EFI/debian/grub.cfg";

/// One GRUB word holding `s` exactly (GRUB's script syntax: nothing is special inside single quotes).
fn quote(s: &str) -> String {
    format!("'{s}'")
}

/// Splits extra kernel command line text into parameters the way the kernel does: whitespace separates,
/// double quotes group and are removed (`rescue.cmd="disks --json"` is one parameter).
///
/// GRUB's `linux` command rebuilds the command line from its arguments: it wraps an argument that holds
/// a space in double quotes (which the kernel and PID 1 read back as one parameter) but puts a backslash
/// before every `"`, `'` and `\`, which nothing on the other side removes. Parameters holding those
/// characters would reach PID 1 changed, so they are refused.
pub fn kernel_params(extra: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in extra.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            '\\' | '\'' => {
                return Err(format!(
                    "{extra:?} holds {c:?}, which GRUB passes to the kernel with a backslash added; boot with \
                     -kernel/-initrd (builder run --direct) to pass it unchanged"
                ))
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if in_quotes {
        return Err(format!("{extra:?} has an unclosed double quote"));
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// The menu (see [`menu::entries`]). `extra_params` (from [`kernel_params`]) are appended to every
/// entry's kernel command line, each as one GRUB word.
pub fn grub_cfg(disk_guid: &Guid, serial_default: bool, extra_params: &[String]) -> String {
    let default = menu::default_index(serial_default);
    let timeout = menu::TIMEOUT_SECS;
    let extra: String = extra_params
        .iter()
        .map(|p| format!(" {}", quote(p)))
        .collect();
    let mut cfg = format!(
        "# Written by the rescue builder; read by the UEFI and the BIOS grub alike.\n\
         set default={default}\n\
         set timeout={timeout}\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n"
    );
    for e in menu::entries(Some(disk_guid)) {
        cfg.push_str(&format!(
            "\nmenuentry '{}' {{\n\
             \tlinux {KERNEL_PATH} {}{extra}\n\
             \tinitrd {INITRD_PATH}\n\
             }}\n",
            e.title, e.args
        ));
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_parameters_are_split_like_the_kernel_does_and_quoted_for_grub() {
        let p = kernel_params(r#"rescue.cmd="disks --json"  rescue.verbose"#).unwrap();
        assert_eq!(p, ["rescue.cmd=disks --json", "rescue.verbose"]);
        assert_eq!(kernel_params("  ").unwrap(), Vec::<String>::new());
        let e = kernel_params("rescue.cmd=\"mount 'a b'\"").unwrap_err();
        assert!(e.contains("--direct"), "{e}");
        assert!(kernel_params("a=\"b").unwrap_err().contains("unclosed"));
        let g = Guid::from_hash(&[3; 32]);
        let cfg = grub_cfg(&g, false, &p);
        assert_eq!(
            cfg.matches(" 'rescue.cmd=disks --json' 'rescue.verbose'\n")
                .count(),
            3,
            "{cfg}"
        );
        assert!(!grub_cfg(&g, false, &[]).contains("''"), "no empty word");
    }
}
