package hwtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"runtime"
	"strings"
	"sync"
)

// cpuRounds and cpuWant are the computation every CPU runs and the
// result it must reach: SHA-256 applied cpuRounds times to "keel-hwtest".
// A CPU, cache or memory fault that changes one bit on the way changes
// the result.
const (
	cpuRounds = 200000
	cpuWant   = "355bf90320ada0cfdeac82be2ededf751131fc6cdf5e042006e1ea6142f6e63e"
)

func chain(rounds int) string {
	sum := sha256.Sum256([]byte("keel-hwtest"))
	for i := 1; i < rounds; i++ {
		sum = sha256.Sum256(sum[:])
	}
	return hex.EncodeToString(sum[:])
}

func checkCPU(ctx context.Context, o Options) Check {
	model, count := cpuInfo(o.proc("cpuinfo"))
	if count == 0 {
		count = runtime.NumCPU()
	}
	rounds := cpuRounds
	if o.Mode == Full {
		rounds *= 10
	}
	want := cpuWant
	if rounds != cpuRounds {
		want = "" // the full run compares the CPUs with each other
	}
	var wg sync.WaitGroup
	got := make([]string, runtime.NumCPU())
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			got[i] = chain(rounds)
		}(i)
	}
	wg.Wait()
	for i, g := range got {
		if (want != "" && g != want) || g != got[0] {
			return fail("%d × %s: a computation on CPU worker %d came out wrong (%s…); the CPU or its memory is faulty", count, model, i, g[:12])
		}
	}
	if p := o.Profile.CPUs; p > 0 && count < p {
		return fail("%d CPUs (%s) where the profile has %d", count, model, p)
	}
	return pass("%d × %s; a SHA-256 chain of %d rounds on each came out right", count, model, rounds)
}

// cpuInfo is the model name and the number of processors in cpuinfo.
func cpuInfo(path string) (string, int) {
	f, err := os.Open(path)
	if err != nil {
		return "unknown CPU", 0
	}
	defer f.Close()
	model, n := "unknown CPU", 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			model = strings.TrimSpace(v)
		}
	}
	return model, n
}
