package bundle

import (
	"bytes"
	"io"
	"testing"
)

// FuzzReader feeds the bundle reader damaged and hostile bundles: it must
// never panic, and hand out only members that bundle.json lists.
func FuzzReader(f *testing.F) {
	meta, files := demoBundle(f)
	good := write(f, meta, files)
	f.Add(good)
	f.Add(good[:len(good)-700])
	f.Add(good[:1024])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Open(bytes.NewReader(data))
		if err != nil {
			return
		}
		for i := 0; ; i++ {
			e, rd, err := r.Next()
			if err != nil {
				return
			}
			if i >= len(r.Meta.Packages) || e != r.Meta.Packages[i] {
				t.Fatalf("member %d is %+v, not what bundle.json lists", i, e)
			}
			io.Copy(io.Discard, rd)
		}
	})
}
