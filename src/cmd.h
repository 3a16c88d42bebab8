/* Subcommands of the rnnd binary. Each parses its own arguments and returns the process exit
 * status (0 success, 1 failure with a message on stderr, 2 usage error); only main() exits. */
#ifndef RNND_CMD_H
#define RNND_CMD_H

int rnnd_cmd_infer(int argc, char **argv);
int rnnd_cmd_inspect(int argc, char **argv);
int rnnd_cmd_serve(int argc, char **argv);
int rnnd_cmd_bench(int argc, char **argv);

#endif
