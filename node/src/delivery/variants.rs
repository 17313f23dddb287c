//! Invoking services based on device capability (5.6.7): a service may offer variants — quality
//! levels (each its own file), chunk sizes — each with what it needs of the consumer's device.
//! The offerer picks, for the capabilities the consumer shares at invocation (G.1 step 6), the
//! first variant in the publisher's order (best first) whose needs are met.

use cpns_overlay::{Capabilities, PowerSource};
use serde::{Deserialize, Serialize};

/// What a variant needs of the consuming device, now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    /// At least this much battery, when on battery.
    pub min_battery_percent: Option<u8>,
    /// Mains power.
    pub mains_power: bool,
    /// A screen.
    pub needs_screen: bool,
    /// A screen at least this wide, in pixels.
    pub min_screen_width: Option<u32>,
    /// At least this much free memory, in bytes.
    pub min_free_memory_bytes: Option<u64>,
    /// A WAN connection.
    pub wan: bool,
}

/// One variant of a service's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Its name (`hd`, `sd`, `audio`...).
    pub name: String,
    /// Its content, when it is not the service's own file.
    pub file: Option<std::path::PathBuf>,
    /// The chunk size to send it in, KiB (1 to 256), when not the default.
    pub chunk_kib: Option<u32>,
    /// What it needs.
    pub needs: Needs,
}

impl Needs {
    /// The first need `caps` does not meet, in words.
    pub fn unmet(&self, caps: &Capabilities) -> Option<String> {
        let d = &caps.dynamic;
        let on_battery = d.power == PowerSource::Battery;
        if self.mains_power && on_battery {
            return Some("mains power".into());
        }
        if let Some(min) = self.min_battery_percent
            && on_battery
            && d.battery_percent.is_some_and(|b| b < min)
        {
            return Some(format!(
                "{min} % battery (the device has {} %)",
                d.battery_percent.unwrap_or(0)
            ));
        }
        let screen = caps.static_caps.screen;
        if (self.needs_screen || self.min_screen_width.is_some()) && screen.is_none() {
            return Some("a screen".into());
        }
        if let (Some(min), Some(s)) = (self.min_screen_width, screen)
            && s.width < min
        {
            return Some(format!(
                "a screen {min} pixels wide (the device's is {})",
                s.width
            ));
        }
        if let Some(min) = self.min_free_memory_bytes
            && d.free_memory_bytes < min
        {
            return Some(format!(
                "{} MiB of free memory (the device has {})",
                min >> 20,
                d.free_memory_bytes >> 20
            ));
        }
        if self.wan && !d.wan {
            return Some("a WAN connection".into());
        }
        None
    }
}

/// The variant for `caps`, with why each better one was passed over; or, when none fits, why
/// not one did.
pub(super) fn choose<'a>(
    variants: &'a [Variant],
    caps: &Capabilities,
) -> Result<(&'a Variant, Vec<String>), String> {
    let mut passed = Vec::new();
    for v in variants {
        match v.needs.unmet(caps) {
            None => return Ok((v, passed)),
            Some(why) => passed.push(format!("{} needs {why}", v.name)),
        }
    }
    Err(format!(
        "no variant fits this device: {}",
        passed.join("; ")
    ))
}

/// Most variants one service may have.
pub(super) const MAX_VARIANTS: usize = 8;

/// Checks one variant's values.
pub(super) fn validate(v: &Variant) -> Result<(), String> {
    if v.name.is_empty() || v.name.len() > 32 {
        return Err("a variant needs a name of 1 to 32 bytes".into());
    }
    if let Some(c) = v.chunk_kib
        && !(1..=256).contains(&c)
    {
        return Err(format!("variant {}: chunk_kib must be 1 to 256", v.name));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cpns_overlay::Screen;

    fn device(screen: Option<u32>, battery: Option<u8>, free_mib: u64) -> Capabilities {
        let mut c = Capabilities::default();
        c.static_caps.screen = screen.map(|w| Screen {
            width: w,
            height: w * 9 / 16,
        });
        if let Some(b) = battery {
            c.dynamic.power = PowerSource::Battery;
            c.dynamic.battery_percent = Some(b);
        }
        c.dynamic.free_memory_bytes = free_mib << 20;
        c
    }

    fn variant(name: &str, needs: Needs, chunk_kib: Option<u32>) -> Variant {
        Variant {
            name: name.into(),
            file: None,
            chunk_kib,
            needs,
        }
    }

    fn ladder() -> Vec<Variant> {
        let hd = Needs {
            min_screen_width: Some(1280),
            min_free_memory_bytes: Some(512 << 20),
            min_battery_percent: Some(30),
            ..Needs::default()
        };
        let sd = Needs {
            needs_screen: true,
            ..Needs::default()
        };
        vec![
            variant("hd", hd, None),
            variant("sd", sd, Some(64)),
            variant("audio", Needs::default(), None),
        ]
    }

    #[test]
    fn the_best_fitting_variant_is_chosen_with_reasons() {
        let v = ladder();
        let (hd, passed) = choose(&v, &device(Some(1920), None, 2048)).unwrap();
        assert_eq!((hd.name.as_str(), passed.len()), ("hd", 0));
        let (sd, passed) = choose(&v, &device(Some(800), None, 2048)).unwrap();
        assert_eq!(sd.name, "sd");
        assert_eq!(sd.chunk_kib, Some(64));
        assert!(passed[0].contains("1280 pixels wide"), "{passed:?}");
        let (sd, passed) = choose(&v, &device(Some(1920), Some(12), 2048)).unwrap();
        assert_eq!(sd.name, "sd");
        assert!(passed[0].contains("30 % battery"), "{passed:?}");
        let (audio, _) = choose(&v, &device(None, None, 64)).unwrap();
        assert_eq!(audio.name, "audio");
    }

    #[test]
    fn no_fit_is_refused_with_every_reason() {
        let mains = Needs {
            mains_power: true,
            ..Needs::default()
        };
        let screen = Needs {
            needs_screen: true,
            ..Needs::default()
        };
        let v = vec![variant("hd", mains, None), variant("sd", screen, None)];
        let e = choose(&v, &device(None, Some(90), 64)).unwrap_err();
        assert!(
            e.contains("hd needs mains power") && e.contains("sd needs a screen"),
            "{e}"
        );
    }
}
