// Package grub makes the boot loader of a keel disk: a standalone GRUB EFI
// binary built from Debian's grub-efi-amd64-bin modules, whose embedded
// config loads grub.cfg from the ESP, and that grub.cfg, which implements the
// A/B slot state machine of package bootstate.
package grub

import (
	"bytes"
	"fmt"
	"text/template"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/layout"
)

// ConfigPath is where grub.cfg lives inside the ESP. Keeping it outside the
// EFI binary lets a base update change the boot menu without a new loader.
const ConfigPath = "EFI/keel/grub.cfg"

// Cmdline is the kernel command line common to every entry. The serial port
// comes last so /dev/console is the serial port.
const Cmdline = "console=tty0 console=ttyS0,115200 panic=10"

// embedded is the config baked into the EFI binary: find the disk GRUB was
// loaded from ($cmdpath is "(hd0,gpt1)/EFI/BOOT") and hand over to grub.cfg
// on its ESP. GRUB 2.06 cannot search by partition name, so the layout's
// fixed numbers are used on that disk.
const embedded = `regexp --set=1:keel_disk '^\(([^,]+),' "$cmdpath"
if [ -z "$keel_disk" ]; then set keel_disk=hd0; fi
export keel_disk
set root=($keel_disk,gpt{{.ESP}})
configfile ($keel_disk,gpt{{.ESP}})/{{.ConfigPath}}
echo "keel: cannot read {{.ConfigPath}} on $keel_disk; the ESP is damaged"
sleep 10
`

// config is grub.cfg. The variable names are those of bootstate.Encode.
// Entry bodies run in a fresh context that sees only exported variables,
// hence the exports; functions are global.
const config = `serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
# Booting the default slot (committed, or a trial of it), the wait is
# hidden: nothing is drawn and Esc on the console opens the menu. After a
# fallback to the other slot and in recovery the menu shows, and waits
# longer.
set timeout={{.Timeout}}
set timeout_style=hidden

# The ESP's partition GUID tells the agent which disk it booted from.
set keel_esp=
probe --set=keel_esp --part-uuid ($keel_disk,gpt{{.ESP}})
export keel_esp

set keel_env0=($keel_disk,gpt{{.ESP}})/{{.Primary}}
set keel_env1=($keel_disk,gpt{{.ESP}})/{{.Backup}}
set keel_envsrc=primary
set keel_magic=
load_env --file $keel_env0
if [ "$keel_magic" != "{{.Magic}}" ]; then
  set keel_envsrc=backup
  set keel_magic=
  load_env --file $keel_env1
fi
if [ "$keel_magic" != "{{.Magic}}" ]; then
  # Both copies unreadable: boot slot a in recovery mode, which says so.
  set keel_envsrc=none
  set keel_default=a
  set keel_last_good=a
  set keel_a_ok=0
  set keel_b_ok=0
fi
if [ "$keel_last_good" != b ]; then set keel_last_good=a; fi
export keel_env0 keel_env1 keel_envsrc keel_gen keel_default keel_last_good keel_magic
export keel_a_ok keel_a_good keel_a_tries keel_a_ver keel_b_ok keel_b_good keel_b_tries keel_b_ver

function keel_save {
  save_env --file $keel_env0 keel_gen keel_default keel_last_good keel_a_ok keel_a_good keel_a_tries keel_a_ver keel_b_ok keel_b_good keel_b_tries keel_b_ver keel_magic
  save_env --file $keel_env1 keel_gen keel_default keel_last_good keel_a_ok keel_a_good keel_a_tries keel_a_ver keel_b_ok keel_b_good keel_b_tries keel_b_ver keel_magic
}
{{range .Slots}}{{$s := .Name}}
function keel_boot_{{.Name}} {
  set keel_mode=recovery
  if [ "$keel_{{.Name}}_ok" = 1 ]; then
    if [ "$keel_{{.Name}}_good" = 1 ]; then
      set keel_mode=good
    elif [ "$keel_{{.Name}}_tries" -gt 0 ]; then
      set keel_mode=trial
      {{range $i, $n := $.Tries}}{{if $i}}elif{{else}}if{{end}} [ "$keel_{{$s}}_tries" = {{$n}} ]; then set keel_{{$s}}_tries={{dec $n}}
      {{end}}fi
      keel_save
    fi
  fi
  set keel_extra=""
  if [ "$1" = recovery ]; then
    set keel_mode=recovery
    # Chosen at the menu while a slot was bootable: someone is at the box.
    if [ -n "$keel_pick" ]; then set keel_extra="keel.recovery=operator"; fi
  fi
  if [ "$keel_mode" = recovery ]; then
    if [ -z "$keel_extra" ]; then set keel_extra="keel.recovery=1"; fi
  fi
  if [ "$1" = hwtest ]; then set keel_extra="$keel_extra keel.hwtest=1"; fi
  echo "keel: booting slot {{.Name}} ($keel_{{.Name}}_ver), $keel_mode, boot state from $keel_envsrc"
  linux ($keel_disk,gpt{{.Part}})/vmlinuz keel.slot={{.Name}} keel.mode=$keel_mode keel.tries=$keel_{{.Name}}_tries keel.bootenv=$keel_envsrc keel.esp=$keel_esp $keel_extra {{$.Cmdline}}
  initrd ($keel_disk,gpt{{.Part}})/initramfs
}
{{end}}
# The slot state machine (bootstate.Decide): the default slot, then the
# other, each if bootable and committed or with tries left; else the last
# good slot in recovery mode.
set keel_pick=
if [ "$keel_default" = b ]; then set keel_order="b a"; else set keel_order="a b"; fi
for s in $keel_order; do
  if [ -z "$keel_pick" ]; then
    if [ "$s" = a ]; then
      if [ "$keel_a_ok" = 1 ]; then
        if [ "$keel_a_good" = 1 ]; then set keel_pick=a; elif [ "$keel_a_tries" -gt 0 ]; then set keel_pick=a; fi
      fi
    else
      if [ "$keel_b_ok" = 1 ]; then
        if [ "$keel_b_good" = 1 ]; then set keel_pick=b; elif [ "$keel_b_tries" -gt 0 ]; then set keel_pick=b; fi
      fi
    fi
  fi
done
export keel_pick
if [ "$keel_default" = b ]; then set keel_want=b; else set keel_want=a; fi
if [ -n "$keel_pick" ]; then
  set default=slot-$keel_pick
  if [ "$keel_pick" != "$keel_want" ]; then
    set timeout_style=menu
    set timeout={{.MenuTimeout}}
  fi
else
  set default=recovery
  set timeout_style=menu
  set timeout={{.MenuTimeout}}
  echo "keel: no bootable base slot; booting slot $keel_last_good in recovery mode"
fi

# A slot that never held a base gets no entry.
if [ -n "$keel_a_ver" ]; then menuentry "keel ${keel_a_ver} (slot A)" --id slot-a { keel_boot_a }; fi
if [ -n "$keel_b_ver" ]; then menuentry "keel ${keel_b_ver} (slot B)" --id slot-b { keel_boot_b }; fi
menuentry "keel recovery console (slot ${keel_last_good})" --id recovery {
  if [ "$keel_last_good" = b ]; then keel_boot_b recovery; else keel_boot_a recovery; fi
}
menuentry "keel hardware self-test (slot ${keel_last_good})" --id hwtest {
  if [ "$keel_last_good" = b ]; then keel_boot_b hwtest; else keel_boot_a hwtest; fi
}
`

// Params are what the generated files depend on.
type Params struct {
	// Timeout is the seconds GRUB waits, menu hidden, before it boots
	// the default slot (Esc on the console shows the menu).
	Timeout int
	// MenuTimeout is the seconds the menu waits, shown, after a
	// fallback to the other slot and in recovery; 0 means 5, and never
	// less than Timeout.
	MenuTimeout int
	// KernelArgs are added to every entry's command line (the bench's
	// initcall_debug).
	KernelArgs string
}

// Config renders grub.cfg.
func Config(p Params) ([]byte, error) {
	type slot struct {
		Name string
		Part int
	}
	tries := make([]int, 0, bootstate.MaxTries)
	for n := bootstate.MaxTries; n >= 1; n-- {
		tries = append(tries, n)
	}
	if p.MenuTimeout == 0 {
		p.MenuTimeout = 5
	}
	p.MenuTimeout = max(p.MenuTimeout, p.Timeout)
	cmdline := Cmdline
	if p.KernelArgs != "" {
		cmdline = p.KernelArgs + " " + Cmdline
	}
	data := map[string]any{
		"Timeout": p.Timeout, "MenuTimeout": p.MenuTimeout, "ESP": partNumber(layout.ESP), "Primary": bootstate.PrimaryPath, "Backup": bootstate.BackupPath,
		"Magic": "keel1", "Cmdline": cmdline, "Tries": tries,
		"Slots": []slot{{"a", partNumber(layout.BaseA)}, {"b", partNumber(layout.BaseB)}},
	}
	t, err := template.New("grub.cfg").Funcs(template.FuncMap{"dec": func(n int) int { return n - 1 }}).Parse(config)
	if err != nil {
		return nil, fmt.Errorf("grub.cfg template: %w", err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, data); err != nil {
		return nil, fmt.Errorf("grub.cfg template: %w", err)
	}
	return out.Bytes(), nil
}

// Embedded renders the config baked into the EFI binary.
func Embedded() ([]byte, error) {
	t, err := template.New("embedded").Parse(embedded)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]any{"ESP": partNumber(layout.ESP), "ConfigPath": ConfigPath})
	return b.Bytes(), err
}

func partNumber(name string) int {
	for _, p := range layout.Parts(layout.DefaultSizes) {
		if p.Name == name {
			return p.Number
		}
	}
	panic("grub: no partition " + name)
}
