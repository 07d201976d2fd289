package hwtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// quickMemory is how much the quick run tests; the full run takes a
// quarter of the memory available.
const quickMemory = 32 << 20

func checkMemory(ctx context.Context, o Options) Check {
	info := memInfo(o.proc("meminfo"))
	total, avail := info["MemTotal"], info["MemAvailable"]
	if total == 0 {
		return fail("the memory size cannot be read from %s", o.proc("meminfo"))
	}
	size := int64(quickMemory)
	if o.Mode == Full {
		size = avail / 4
	}
	size = min(size, avail/2) &^ 4095
	if size < 1<<20 {
		return fail("%d MiB of memory, %d MiB available: too little to test", total>>20, avail>>20)
	}
	bad, err := patternTest(ctx, size)
	if err != nil {
		return fail("%d MiB of memory; the pattern test could not take %d MiB: %v", total>>20, size>>20, err)
	}
	if bad != "" {
		return fail("%d MiB of memory; the pattern test over %d MiB found %s: the memory is faulty", total>>20, size>>20, bad)
	}
	if p := o.Profile.MemoryMiB; p > 0 && total < int64(p)<<20*9/10 {
		return fail("%d MiB of memory where the profile has %d MiB", total>>20, p)
	}
	return pass("%d MiB of memory (%d MiB available); patterns over %d MiB read back right", total>>20, avail>>20, size>>20)
}

// patternTest maps size bytes outside the Go heap (so the memory goes
// back at once), writes patterns and reads them back.
func patternTest(ctx context.Context, size int64) (string, error) {
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return "", err
	}
	defer unix.Munmap(mem)
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), len(mem)/8)
	for _, p := range []uint64{0x5555555555555555, 0xaaaaaaaaaaaaaaaa, 0} {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		for i := range words {
			// The address in the pattern finds address lines that alias.
			words[i] = p ^ uint64(i)*0x9e3779b97f4a7c15
		}
		for i, w := range words {
			if want := p ^ uint64(i)*0x9e3779b97f4a7c15; w != want {
				return fmt.Sprintf("word %d reading %#x instead of %#x", i, w, want), nil
			}
		}
	}
	return "", nil
}

// memInfo is /proc/meminfo in bytes.
func memInfo(path string) map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fs[0], 10, 64)
		if len(fs) > 1 && fs[1] == "kB" {
			n <<= 10
		}
		out[k] = n
	}
	return out
}
