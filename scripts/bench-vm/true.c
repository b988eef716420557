/* bench-vm: a static `true`. */
int main(void) { return 0; }
