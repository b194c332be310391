/* Memory read bandwidth of this machine: the limit of batch-1 decode, which
 * reads every weight once per token.
 *   gcc -O3 -march=native -ffast-math -fopenmp scripts/membw.c -o /tmp/membw
 *   OMP_NUM_THREADS=2 /tmp/membw
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <omp.h>
int main(){ size_t n = (size_t)512<<20/4*1; n = 128*1024*1024; float *a = aligned_alloc(64, n*4); for(size_t i=0;i<n;i++) a[i]=1.0f;
 double best=1e9; for(int r=0;r<7;r++){ struct timespec t0,t1; clock_gettime(CLOCK_MONOTONIC,&t0); float s=0;
 #pragma omp parallel for reduction(+:s)
 for(size_t i=0;i<n;i++) s+=a[i];
 clock_gettime(CLOCK_MONOTONIC,&t1); double dt=(t1.tv_sec-t0.tv_sec)+(t1.tv_nsec-t0.tv_nsec)*1e-9; if(dt<best)best=dt; if(s<0)printf("x");}
 printf("read bandwidth: %.1f GB/s (best of 7, %zu MB, %d threads)\n", n*4/best/1e9, n*4>>20, omp_get_max_threads()); }
