package kmods

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeModule returns a minimal ELF64 relocatable object whose only
// content is a .modinfo section holding fields ("name=x", "depends=y,z"),
// laid out as the kernel's modpost does: NUL-terminated, NUL-padded.
func fakeModule(fields ...string) []byte {
	var modinfo bytes.Buffer
	for _, f := range fields {
		modinfo.WriteString(f)
		modinfo.WriteByte(0)
		modinfo.WriteByte(0) // alignment padding, as the linker leaves
	}
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modinfoOff := uint64(ehsize)
	shstrOff := modinfoOff + uint64(modinfo.Len())
	shOff := (shstrOff + uint64(len(shstrtab)) + 7) &^ 7

	var b bytes.Buffer
	le := binary.LittleEndian
	ident := [16]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */}
	b.Write(ident[:])
	binary.Write(&b, le, uint16(1))  // e_type ET_REL
	binary.Write(&b, le, uint16(62)) // e_machine EM_X86_64
	binary.Write(&b, le, uint32(1))  // e_version
	binary.Write(&b, le, uint64(0))  // e_entry
	binary.Write(&b, le, uint64(0))  // e_phoff
	binary.Write(&b, le, shOff)      // e_shoff
	binary.Write(&b, le, uint32(0))  // e_flags
	binary.Write(&b, le, uint16(ehsize))
	binary.Write(&b, le, uint16(0)) // e_phentsize
	binary.Write(&b, le, uint16(0)) // e_phnum
	binary.Write(&b, le, uint16(shentsize))
	binary.Write(&b, le, uint16(3)) // e_shnum
	binary.Write(&b, le, uint16(2)) // e_shstrndx
	b.Write(modinfo.Bytes())
	b.Write(shstrtab)
	for uint64(b.Len()) < shOff {
		b.WriteByte(0)
	}
	section := func(name, typ uint32, off, size uint64) {
		binary.Write(&b, le, name)
		binary.Write(&b, le, typ)
		binary.Write(&b, le, uint64(0)) // sh_flags
		binary.Write(&b, le, uint64(0)) // sh_addr
		binary.Write(&b, le, off)
		binary.Write(&b, le, size)
		binary.Write(&b, le, uint32(0)) // sh_link
		binary.Write(&b, le, uint32(0)) // sh_info
		binary.Write(&b, le, uint64(1)) // sh_addralign
		binary.Write(&b, le, uint64(0)) // sh_entsize
	}
	section(0, 0, 0, 0)                              // SHN_UNDEF
	section(1, 1, modinfoOff, uint64(modinfo.Len())) // .modinfo PROGBITS
	section(10, 3, shstrOff, uint64(len(shstrtab)))  // .shstrtab STRTAB
	return b.Bytes()
}

func TestReadInfo(t *testing.T) {
	info, err := ReadInfo(bytes.NewReader(fakeModule(
		"license=GPL", "depends=virtio,virtio_ring", "alias=virtio:d00000001v*",
		"alias=net-pf-99", "softdep=pre: crypto-crc32c post: x", "name=virtio_net",
		"vermagic=6.1.0-test SMP mod_unload ")))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "virtio_net" || strings.Join(info.Depends, ",") != "virtio,virtio_ring" ||
		strings.Join(info.Aliases, " ") != "virtio:d00000001v* net-pf-99" ||
		info.VerMagic != "6.1.0-test SMP mod_unload" {
		t.Errorf("ReadInfo = %+v", info)
	}
	pre, post := softDeps(info.SoftDeps)
	if strings.Join(pre, " ") != "crypto-crc32c" || strings.Join(post, " ") != "x" {
		t.Errorf("softDeps = %v, %v", pre, post)
	}
	if _, err := ReadInfo(bytes.NewReader([]byte("not an elf"))); err == nil {
		t.Error("ReadInfo accepted garbage")
	}
}

// writeTree lays out fake modules under a temporary kernel directory the
// way image/deps.sh does and returns that directory.
func writeTree(t *testing.T, release string, mods map[string][]byte, builtin string) string {
	t.Helper()
	kdir := t.TempDir()
	mdir := filepath.Join(kdir, "lib", "modules", release)
	for rel, data := range mods {
		p := filepath.Join(mdir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(kdir, "version"):         release + "\n",
		filepath.Join(mdir, "modules.builtin"): builtin,
		filepath.Join(mdir, "modules.order"):   "kernel/a.ko\n",
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return kdir
}
