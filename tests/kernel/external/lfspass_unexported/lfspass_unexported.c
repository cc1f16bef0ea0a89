// SPDX-License-Identifier: GPL-2.0
/*
 * lfspass_unexported: an out-of-tree module that never links, on any tree.  It compiles
 * (init.h declares saved_command_line), but the kernel does not export that symbol to modules,
 * so modpost stops with 'ERROR: modpost: "saved_command_line" [...] undefined!'.
 * tests/kernel/test_external.py checks that `doit kernel` then stops before install.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

static int __init lfspass_unexported_init(void)
{
	pr_info("lfspass_unexported: booted with %s\n", saved_command_line);
	return 0;
}

module_init(lfspass_unexported_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lfspass test: uses a symbol the kernel does not export");
