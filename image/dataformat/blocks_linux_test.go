package dataformat

import (
	"os"
	"syscall"
)

func blocksUsed(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks * 512 }
