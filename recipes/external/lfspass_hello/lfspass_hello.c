// SPDX-License-Identifier: GPL-2.0
/*
 * lfspass_hello: the out-of-tree module of the lab recipe (recipes/lab.toml).  lfspass builds it
 * against the lab kernel before that kernel is installed; the lab guest loads it from
 * lib/modules/<release>/updates/lfspass_hello/ and the lab's verdict says so.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

static int __init lfspass_hello_init(void)
{
	pr_info("lfspass_hello: hello from an out-of-tree module built by lfspass\n");
	return 0;
}

static void __exit lfspass_hello_exit(void)
{
	pr_info("lfspass_hello: goodbye\n");
}

module_init(lfspass_hello_init);
module_exit(lfspass_hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lfspass lab: an out-of-tree module that says it was loaded");
