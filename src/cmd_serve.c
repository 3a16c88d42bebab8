/* placeholder until the daemon lands (issue 3) */
#include <stdio.h>
#include "cmd.h"

int rnnd_cmd_serve(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rnnd serve: not built yet\n");
    return 1;
}
