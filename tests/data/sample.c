/* A fixed-size ring buffer of sensor readings: real C for the code splitter test. */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING_CAPACITY 64

struct reading {
    long timestamp;
    double celsius;
};

struct ring {
    struct reading items[RING_CAPACITY];
    size_t head;
    size_t count;
    unsigned long dropped;
};

void ring_init(struct ring *r)
{
    memset(r, 0, sizeof(*r));
}

bool ring_is_full(const struct ring *r)
{
    return r->count == RING_CAPACITY;
}

/* Adds a reading, overwriting the oldest one when the ring is full. */
void ring_push(struct ring *r, long timestamp, double celsius)
{
    size_t tail = (r->head + r->count) % RING_CAPACITY;
    r->items[tail].timestamp = timestamp;
    r->items[tail].celsius = celsius;
    if (ring_is_full(r)) {
        r->head = (r->head + 1) % RING_CAPACITY;
        r->dropped++;
    } else {
        r->count++;
    }
}

/* Removes the oldest reading into *out; returns false when the ring is empty. */
bool ring_pop(struct ring *r, struct reading *out)
{
    if (r->count == 0) {
        return false;
    }
    *out = r->items[r->head];
    r->head = (r->head + 1) % RING_CAPACITY;
    r->count--;
    return true;
}

double ring_average(const struct ring *r)
{
    double sum = 0.0;
    size_t i;

    if (r->count == 0) {
        return 0.0;
    }
    for (i = 0; i < r->count; i++) {
        sum += r->items[(r->head + i) % RING_CAPACITY].celsius;
    }
    return sum / (double)r->count;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of the readings, computed on a sorted copy. */
double ring_median(const struct ring *r)
{
    double values[RING_CAPACITY];
    size_t i;

    if (r->count == 0) {
        return 0.0;
    }
    for (i = 0; i < r->count; i++) {
        values[i] = r->items[(r->head + i) % RING_CAPACITY].celsius;
    }
    qsort(values, r->count, sizeof(double), compare_doubles);
    if (r->count % 2 == 1) {
        return values[r->count / 2];
    }
    return (values[r->count / 2 - 1] + values[r->count / 2]) / 2.0;
}

/* The lowest and highest readings; returns false when the ring is empty. */
bool ring_min_max(const struct ring *r, double *min, double *max)
{
    size_t i;

    if (r->count == 0) {
        return false;
    }
    *min = *max = r->items[r->head].celsius;
    for (i = 1; i < r->count; i++) {
        double c = r->items[(r->head + i) % RING_CAPACITY].celsius;
        if (c < *min) {
            *min = c;
        }
        if (c > *max) {
            *max = c;
        }
    }
    return true;
}

void ring_print(const struct ring *r, FILE *out)
{
    size_t i;

    for (i = 0; i < r->count; i++) {
        const struct reading *rd = &r->items[(r->head + i) % RING_CAPACITY];
        fprintf(out, "%ld\t%.2f\n", rd->timestamp, rd->celsius);
    }
}

int main(void)
{
    struct ring r;
    struct reading oldest;
    long t;

    ring_init(&r);
    for (t = 0; t < 100; t++) {
        ring_push(&r, t, 18.0 + (double)(t % 7) * 0.5);
    }
    printf("kept %zu, dropped %lu\n", r.count, r.dropped);
    printf("average %.2f, median %.2f\n", ring_average(&r), ring_median(&r));
    if (ring_pop(&r, &oldest)) {
        printf("oldest kept reading: t=%ld %.1f C\n", oldest.timestamp, oldest.celsius);
    }
    return EXIT_SUCCESS;
}
