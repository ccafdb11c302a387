/* rustograd's curve fit with the gradient derived by hand: the limit a tape
 * can approach. Fits s*exp(-(x-mu)^2/sigma^2) to the samples (x[i], t[i]);
 * each epoch steps by -lr * the gradient of sum_i (f(x[i]) - t[i])^2.
 * params holds mu, sigma, s: the start on entry, the fit on return. */
#include <math.h>

void curve_fit(const double *x, const double *t, int n,
               int epochs, double lr, double params[3])
{
    double mu = params[0], sigma = params[1], s = params[2];

    for (int epoch = 0; epoch < epochs; epoch++) {
        double inv_sigma2 = 1.0 / (sigma * sigma);
        double grad_mu = 0.0, grad_sigma = 0.0, grad_s = 0.0;

        for (int i = 0; i < n; i++) {
            double d = x[i] - mu;
            double g = exp(-d * d * inv_sigma2);
            double r = 2.0 * (s * g - t[i]);             /* d loss / d f */
            double r_dmu = r * s * g * 2.0 * d * inv_sigma2;  /* r * df/dmu */

            grad_mu += r_dmu;
            grad_sigma += r_dmu * d / sigma;
            grad_s += r * g;
        }
        mu -= lr * grad_mu;
        sigma -= lr * grad_sigma;
        s -= lr * grad_s;
    }
    params[0] = mu;
    params[1] = sigma;
    params[2] = s;
}
