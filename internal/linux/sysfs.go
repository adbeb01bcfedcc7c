package linux

// SysRoot is where sysfs is mounted; tests may point it elsewhere.
var SysRoot = "/sys"
