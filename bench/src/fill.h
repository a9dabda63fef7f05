/* kyso-bench-fill: its two commands, each parsing its own flags (argv[0] is
 * the command's name). They return the exit status. */
#ifndef KYSO_BENCH_FILL_H
#define KYSO_BENCH_FILL_H

int fill_archive_main(int argc, char **argv);
int fill_keys_main(int argc, char **argv);

#endif
