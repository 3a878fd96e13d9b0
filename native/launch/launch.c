/* placeholder until the launcher lands */
#include <stdio.h>
int main(void) { fputs("nbs-launch: not built yet\n", stderr); return 125; }
