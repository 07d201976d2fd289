package catalog

import "testing"

// FuzzParse feeds the catalog parser what a hostile server could send
// (the signature is checked first on the box, but the parser must hold
// even so): it never panics, and what it accepts validates.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"format":1,"entries":[]}`))
	f.Add([]byte(`{"format":1,"entries":[{"kind":"base","name":"keel","version":"1.0.0","file":"packages/keel-base-1.0.0.kpkg","size":1024,"sha256":"00"}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parse(b)
		if err != nil {
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("parse accepted a catalog that does not validate: %v", err)
		}
	})
}
