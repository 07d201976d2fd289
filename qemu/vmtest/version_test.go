package vmtest

import (
	"testing"

	"keel.dev/keel/image/diskimage"
)

func imageVersion(t *testing.T, img string) string {
	t.Helper()
	st, _, err := diskimage.ReadBootState(img)
	if err != nil {
		t.Fatal(err)
	}
	return st.A.Version
}
