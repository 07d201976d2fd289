package hwtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// nic is a network interface with a device behind it (not lo, bridges,
// veths or tunnels).
type nic struct {
	name, driver, mac string
	link              bool
	speed             int
}

func findNICs(o Options) []nic {
	es, _ := os.ReadDir(o.sys("class/net"))
	var out []nic
	for _, e := range es {
		base := "class/net/" + e.Name()
		drv, err := os.Readlink(o.sys(base + "/device/driver"))
		if err != nil {
			continue
		}
		n := nic{name: e.Name(), driver: filepath.Base(drv), mac: readTrim(o.sys(base + "/address"))}
		n.link = readTrim(o.sys(base+"/carrier")) == "1"
		n.speed, _ = strconv.Atoi(readTrim(o.sys(base + "/speed")))
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func checkNICs(ctx context.Context, o Options) Check {
	nics := findNICs(o)
	var details, failed []string
	for _, n := range nics {
		state := "no link"
		if n.link {
			state = "link up"
			if n.speed > 0 {
				state += fmt.Sprintf(" at %d Mb/s", n.speed)
			}
		}
		details = append(details, fmt.Sprintf("%s (%s, %s): %s", n.name, n.driver, n.mac, state))
	}
	used := map[int]bool{}
	for _, want := range o.Profile.NICs {
		found := -1
		for i, n := range nics {
			if !used[i] && n.driver == want.Driver {
				found = i
				break
			}
		}
		if found < 0 {
			failed = append(failed, "the profile's "+want.Driver+" interface is missing")
			continue
		}
		used[found] = true
		if want.Link && !nics[found].link {
			failed = append(failed, nics[found].name+" has no link: check its cable")
		}
	}
	if len(nics) == 0 && len(o.Profile.NICs) == 0 {
		return skip("no network interface, and the profile has none")
	}
	var c Check
	if len(failed) > 0 {
		c = fail("%s", strings.Join(failed, "; "))
	} else {
		c = pass("%d network interface(s) present", len(nics))
	}
	c.Details = details
	return c
}

// checkRTC reads the RTC twice, a second and a bit apart: it must tick
// and tell a plausible date. It reads through sysfs where it can: the
// character device opens only once at a time, and the agent's clock
// keeping may hold it (EBUSY).
func checkRTC(ctx context.Context, o Options) Check {
	read, closeRTC, err := openRTC(o)
	if err != nil {
		if o.Profile.RTC {
			return fail("no RTC (%v) where the profile has one: the clock is lost at every power cut", err)
		}
		return skip("no RTC, and the profile has none")
	}
	defer closeRTC()
	ta, err := read()
	if err != nil {
		return fail("the RTC cannot be read: %v", err)
	}
	select {
	case <-ctx.Done():
		return skip("stopped")
	case <-time.After(1100 * time.Millisecond):
	}
	tb, err := read()
	if err != nil {
		return fail("the RTC cannot be read: %v", err)
	}
	if !tb.After(ta) {
		return fail("the RTC does not tick: it read %s twice, 1.1 s apart", ta.Format(time.DateTime))
	}
	if tb.Year() < 2024 || tb.Year() > 2100 {
		return fail("the RTC ticks but reads %s: its battery may be flat", tb.Format(time.DateTime))
	}
	return pass("the RTC ticks and reads %s UTC (%+.0f s from the system clock)", tb.Format(time.DateTime), tb.Sub(time.Now().UTC().Truncate(time.Second)).Seconds())
}

// openRTC returns a reader of rtc0's time: its sysfs since_epoch, else
// the device's RTC_RD_TIME.
func openRTC(o Options) (read func() (time.Time, error), closeRTC func(), err error) {
	epoch := o.sys("class/rtc/rtc0/since_epoch")
	if _, err := os.Stat(epoch); err == nil {
		return func() (time.Time, error) {
			b, err := os.ReadFile(epoch)
			if err != nil {
				return time.Time{}, err
			}
			n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("%s: %w", epoch, err)
			}
			return time.Unix(n, 0).UTC(), nil
		}, func() {}, nil
	}
	f, err := os.Open(o.dev("rtc0"))
	if err != nil {
		return nil, nil, err
	}
	return func() (time.Time, error) {
		t, err := unix.IoctlGetRTCTime(int(f.Fd()))
		if err != nil {
			return time.Time{}, err
		}
		return rtcTime(t), nil
	}, func() { f.Close() }, nil
}

func rtcTime(t *unix.RTCTime) time.Time {
	return time.Date(int(t.Year)+1900, time.Month(t.Mon+1), int(t.Mday), int(t.Hour), int(t.Min), int(t.Sec), 0, time.UTC)
}

// checkWatchdog finds a watchdog in sysfs without opening its device:
// opening /dev/watchdog arms it.
func checkWatchdog(ctx context.Context, o Options) Check {
	es, _ := os.ReadDir(o.sys("class/watchdog"))
	var found []string
	for _, e := range es {
		id := readTrim(o.sys("class/watchdog/" + e.Name() + "/identity"))
		if id == "" {
			id = "unnamed"
		}
		found = append(found, fmt.Sprintf("%s (%s)", e.Name(), id))
	}
	switch {
	case len(found) > 0:
		return pass("%s present", strings.Join(found, ", "))
	case o.Profile.Watchdog:
		return fail("no hardware watchdog where the profile has one: a hung trial boot would not end by itself")
	}
	return skip("no hardware watchdog, and the profile has none")
}

// checkSensors reads every hwmon temperature against its critical limit,
// or the profile's maximum.
func checkSensors(ctx context.Context, o Options) Check {
	limit := o.Profile.MaxTempC
	if limit == 0 {
		limit = 90
	}
	mons, _ := filepath.Glob(o.sys("class/hwmon/hwmon*"))
	var details, hot []string
	for _, m := range mons {
		chip := readTrim(m + "/name")
		inputs, _ := filepath.Glob(m + "/temp*_input")
		for _, in := range inputs {
			milli, err := strconv.Atoi(readTrim(in))
			if err != nil {
				continue
			}
			prefix := strings.TrimSuffix(in, "_input")
			label := readTrim(prefix + "_label")
			if label == "" {
				label = filepath.Base(prefix)
			}
			max := limit
			if crit, err := strconv.Atoi(readTrim(prefix + "_crit")); err == nil && crit > 0 {
				max = crit / 1000
			}
			c := milli / 1000
			details = append(details, fmt.Sprintf("%s %s: %d °C (limit %d °C)", chip, label, c, max))
			if c >= max {
				hot = append(hot, fmt.Sprintf("%s %s at %d °C", chip, label, c))
			}
		}
	}
	var c Check
	switch {
	case len(details) == 0:
		return skip("no temperature sensors (hwmon) on this hardware")
	case len(hot) > 0:
		c = fail("too hot: %s; check the fans and the air flow", strings.Join(hot, ", "))
	default:
		c = pass("%d temperature(s) within their limits", len(details))
	}
	c.Details = details
	return c
}
