import numpy as np
import pandas as pd
from distributed import Client


#function used to do parallel computing on
def compute_pi_MonteCarlo(Nb_Data):
    """
    computes the value of pi using the monte carlo method
    """
    Radius = 1
    Nb_Data = int(round(Nb_Data))
    x = np.random.uniform(-Radius, Radius, Nb_Data)
    y = np.random.uniform(-Radius, Radius, Nb_Data)
    pi_mc = 4*np.sum(np.power(x,2)+np.power(y,2)<Radius**2)/Nb_Data
    err = 100*np.abs(pi_mc-np.pi)/np.pi
    return [Nb_Data, pi_mc, err]
#connect to the scheduler
client = Client('127.0.0.1:8786')
#submit tasks
data = [client.submit(compute_pi_MonteCarlo, Nb_Data) 
        for Nb_Data in np.logspace(3, 7, num=1200, dtype=int)]
#gather the results
data = client.gather(data)
df = pd.DataFrame(data)
df.columns = ["number of points for MonteCarlo", "value of pi", "error (%)"]
df.tail()
